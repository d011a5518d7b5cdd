//! bpf(2) commands aya does not offer: `BPF_MAP_UPDATE_BATCH`, `BPF_MAP_DELETE_BATCH` and
//! `BPF_MAP_LOOKUP_BATCH` (many entries per system call where the kernel and the map type
//! support them; callers fall back to one call per entry on [`BatchError::Unsupported`]),
//! and `BPF_LINK_DETACH` (detach a link now, whoever else still holds it).

use std::os::fd::RawFd;

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_LINK_DETACH: libc::c_long = 34;
/// The kernel's `ENOTSUPP` (not in libc): an operation the map type does not implement.
const ENOTSUPP: i32 = 524;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

#[derive(Debug)]
pub enum BatchError {
    /// The kernel or this map type has no batch operation; `done` entries were processed.
    Unsupported { done: usize },
    /// A real failure after `done` entries.
    Failed { done: usize, source: std::io::Error },
}

/// One batch system call.
///
/// # Safety
/// `attr` must be a valid `bpf_attr.batch` for `command`: every buffer it points at holds
/// `attr.count` entries (and the position tokens) and outlives the call.
unsafe fn batch_call(command: libc::c_long, attr: &mut BatchAttr) -> std::io::Result<()> {
    // SAFETY: the caller's promise above.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            command,
            std::ptr::from_mut(attr),
            size_of::<BatchAttr>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A batch failure: unsupported (the caller falls back to one call per entry) or real.
fn batch_error(error: std::io::Error, done: usize) -> BatchError {
    match error.raw_os_error() {
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP) => BatchError::Unsupported { done },
        _ => BatchError::Failed {
            done,
            source: error,
        },
    }
}

/// Runs one batch command over `count` entries; `keys` (and `values`) are the entries' bytes,
/// back to back.
fn batch(
    command: libc::c_long,
    map: RawFd,
    keys: &[u8],
    values: Option<&[u8]>,
    count: usize,
) -> Result<(), BatchError> {
    let mut done = 0usize;
    let key_size = keys.len().checked_div(count).unwrap_or(0);
    let value_size = values.map_or(0, |v| v.len().checked_div(count).unwrap_or(0));
    while done < count {
        let chunk = (count - done).min(4096);
        let mut attr = BatchAttr {
            keys: keys[done * key_size..].as_ptr() as u64,
            values: values.map_or(0, |v| v[done * value_size..].as_ptr() as u64),
            count: chunk as u32,
            map_fd: map as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the key and value buffers hold `chunk` entries from `done` on and outlive
        // the call.
        if let Err(error) = unsafe { batch_call(command, &mut attr) } {
            return Err(batch_error(error, done + attr.count as usize));
        }
        done += chunk;
    }
    Ok(())
}

pub fn update(map: RawFd, keys: &[u8], values: &[u8], count: usize) -> Result<(), BatchError> {
    batch(BPF_MAP_UPDATE_BATCH, map, keys, Some(values), count)
}

pub fn delete(map: RawFd, keys: &[u8], count: usize) -> Result<(), BatchError> {
    batch(BPF_MAP_DELETE_BATCH, map, keys, None, count)
}

/// Counts the entries of a hash map with `BPF_MAP_LOOKUP_BATCH`, 4,096 per system call (a
/// walk with one `get_next_key` per entry costs a million calls on a full conntrack table).
pub fn count(map: RawFd, key_size: usize, value_size: usize) -> Result<u64, BatchError> {
    const CHUNK: usize = 4096;
    let mut keys = vec![0u8; key_size * CHUNK];
    let mut values = vec![0u8; value_size * CHUNK];
    // The position tokens are opaque to userspace; a hash map's is a 32-bit bucket index.
    let (mut position, mut next) = ([0u8; 8], [0u8; 8]);
    let mut total = 0u64;
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { position.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: CHUNK as u32,
            map_fd: map as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the buffers hold `CHUNK` keys and values and the tokens 8 bytes, all
        // outliving the call.
        let result = unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        total += u64::from(attr.count);
        match result {
            Ok(()) => {}
            // The end of the map.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => return Ok(total),
            Err(error) => return Err(batch_error(error, 0)),
        }
        position = next;
        first = false;
    }
}

/// Reads the values of indexes `0..len` of an array map with `BPF_MAP_LOOKUP_BATCH`, 4,096 per
/// system call (one call per index costs milliseconds at ten thousand rules). `value_size` is
/// what the kernel copies per index: for a per-CPU array, [`per_cpu_slot`] times the possible
/// CPUs. The values come back to back, in index order.
pub fn lookup_array(map: RawFd, len: u32, value_size: usize) -> Result<Vec<u8>, BatchError> {
    const CHUNK: u32 = 4096;
    let mut values = vec![0u8; value_size * len as usize];
    let mut keys = vec![0u32; CHUNK as usize];
    // An array's position token is the last index read.
    let (mut position, mut next) = (0u32, 0u32);
    let mut done = 0u32;
    while done < len {
        let chunk = (len - done).min(CHUNK);
        let mut attr = BatchAttr {
            in_batch: if done == 0 {
                0
            } else {
                std::ptr::from_ref(&position) as u64
            },
            out_batch: std::ptr::from_mut(&mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values[done as usize * value_size..].as_mut_ptr() as u64,
            count: chunk,
            map_fd: map as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `keys` holds `CHUNK` indexes, `values` `chunk` values from `done` on, the
        // tokens one index each; all outlive the call.
        let result = unsafe { batch_call(BPF_MAP_LOOKUP_BATCH, &mut attr) };
        let read = attr.count.min(chunk);
        if keys[..read as usize]
            .iter()
            .zip(done..)
            .any(|(key, expected)| *key != expected)
        {
            return Err(BatchError::Failed {
                done: done as usize,
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the batch lookup returned indexes out of order",
                ),
            });
        }
        done += read;
        match result {
            Ok(()) => {}
            // The end of the array.
            Err(error) if error.raw_os_error() == Some(libc::ENOENT) => break,
            Err(error) => return Err(batch_error(error, done as usize)),
        }
        position = next;
    }
    values.truncate(done as usize * value_size);
    Ok(values)
}

/// The bytes one CPU's value of type `T` takes in what the kernel copies out of a per-CPU
/// map: its size rounded up to 8.
pub fn per_cpu_slot<T>() -> usize {
    size_of::<T>().next_multiple_of(8)
}

/// The bytes of plain-old-data values, back to back.
pub fn bytes_of<T: aya::Pod>(items: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(items));
    for item in items {
        // SAFETY: `T: Pod` is plain old data without padding; reading its bytes is defined.
        let bytes = unsafe {
            std::slice::from_raw_parts(std::ptr::from_ref(item).cast::<u8>(), size_of::<T>())
        };
        out.extend_from_slice(bytes);
    }
    out
}

/// A plain-old-data value from the first `size_of::<T>()` of `bytes` (the inverse of
/// [`bytes_of`]).
pub fn read_pod<T: aya::Pod>(bytes: &[u8]) -> T {
    assert!(
        bytes.len() >= size_of::<T>(),
        "{} bytes for a value of {}",
        bytes.len(),
        size_of::<T>()
    );
    // SAFETY: `T: Pod` is valid for any bytes, and `bytes` holds enough of them; the read
    // does not need alignment.
    unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

/// Detaches the link behind `link` at once (its program stops running), even while other
/// file descriptors or pins still refer to it.
pub fn link_detach(link: RawFd) -> std::io::Result<()> {
    /// The `link_detach` member of `union bpf_attr`.
    #[repr(C)]
    struct LinkDetachAttr {
        link_fd: u32,
    }
    let mut attr = LinkDetachAttr {
        link_fd: link as u32,
    };
    // SAFETY: `attr` is a valid `bpf_attr.link_detach` for the duration of the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            std::ptr::from_mut(&mut attr),
            size_of::<LinkDetachAttr>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &std::path::Path) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    use std::os::unix::ffi::OsStrExt as _;
    /// The `obj` member of `union bpf_attr`.
    #[repr(C)]
    struct ObjAttr {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        /// Explicit, so the kernel sees zeros past the last field (it checks).
        _pad: u32,
    }
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut attr = ObjAttr {
        pathname: c_path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        _pad: 0,
    };
    // SAFETY: `attr` points at a NUL-terminated path that outlives the call.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            std::ptr::from_mut(&mut attr),
            size_of::<ObjAttr>(),
        )
    };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(result as i32) })
}
