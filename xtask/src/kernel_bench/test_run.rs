//! `BPF_PROG_TEST_RUN`: the kernel runs a loaded program on a packet we hand it, `repeat`
//! times in a loop, and reports the last return value and the mean time per run. Also the
//! packets the kernel benchmark feeds it. No aya here: the command and its attribute block are
//! small, and the layout is checked below against the kernel's uapi.
#![cfg_attr(
    not(feature = "kernel-bench"),
    expect(
        dead_code,
        reason = "used by the kernel benchmark, which only builds with the kernel-bench feature"
    )
)]

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd as _, BorrowedFd};

/// `enum bpf_cmd`: BPF_PROG_TEST_RUN (alias BPF_PROG_RUN).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// The `test` member of `union bpf_attr`, as Linux 6.18 defines it (`include/uapi/linux/
/// bpf.h`; the running kernel's BTF shows the same fields). The `__aligned_u64` fields hold
/// user pointers. The kernel accepts an attribute block shorter than the whole union and
/// requires every byte after the last field it knows to be zero (`_pad`).
#[repr(C)]
#[derive(Debug, Default)]
pub struct TestRunAttr {
    pub prog_fd: u32,
    /// Output: the program's return value of the last run.
    pub retval: u32,
    pub data_size_in: u32,
    /// Input/output: capacity and length of `data_out` (0: no copy back).
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    /// Output: mean nanoseconds per run (the kernel divides the loop's time by `repeat`).
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    /// `BPF_F_TEST_*`; must be 0 for TC programs.
    pub flags: u32,
    /// Only with `BPF_F_TEST_RUN_ON_CPU`; must be 0 for TC programs.
    pub cpu: u32,
    /// XDP live frames only.
    pub batch_size: u32,
    pub _pad: u32,
}

const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(offset_of!(TestRunAttr, prog_fd) == 0);
    assert!(offset_of!(TestRunAttr, retval) == 4);
    assert!(offset_of!(TestRunAttr, data_size_in) == 8);
    assert!(offset_of!(TestRunAttr, data_size_out) == 12);
    assert!(offset_of!(TestRunAttr, data_in) == 16);
    assert!(offset_of!(TestRunAttr, data_out) == 24);
    assert!(offset_of!(TestRunAttr, repeat) == 32);
    assert!(offset_of!(TestRunAttr, duration) == 36);
    assert!(offset_of!(TestRunAttr, ctx_size_in) == 40);
    assert!(offset_of!(TestRunAttr, ctx_size_out) == 44);
    assert!(offset_of!(TestRunAttr, ctx_in) == 48);
    assert!(offset_of!(TestRunAttr, ctx_out) == 56);
    assert!(offset_of!(TestRunAttr, flags) == 64);
    assert!(offset_of!(TestRunAttr, cpu) == 68);
    assert!(offset_of!(TestRunAttr, batch_size) == 72);
    assert!(size_of::<TestRunAttr>() == 80);
};

/// What one test run reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRun {
    /// The program's return value (a TC action: -1 continue/unspec, 2 shot), of the last run.
    pub retval: i32,
    /// Mean nanoseconds per run, loop overhead included.
    pub nanoseconds: u32,
}

/// Runs the program `repeat` times on `packet` (an Ethernet frame). For a TC program without
/// a context the kernel builds the socket buffer on the loopback device of the caller's
/// network namespace, so `__sk_buff.ifindex` reads as loopback's index.
pub fn run(program: BorrowedFd<'_>, packet: &[u8], repeat: u32) -> std::io::Result<TestRun> {
    let mut attr = TestRunAttr {
        prog_fd: u32::try_from(program.as_raw_fd())
            .map_err(|_| std::io::ErrorKind::InvalidInput)?,
        data_size_in: u32::try_from(packet.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?,
        data_in: packet.as_ptr() as u64,
        repeat,
        ..TestRunAttr::default()
    };
    // SAFETY: `attr` is a valid, fully initialised `test` block of the size passed; the
    // kernel reads `packet` (valid for `data_size_in` bytes for the whole call) and writes
    // only `retval`, `duration` and the size fields inside `attr`.
    let result = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            &mut attr as *mut TestRunAttr,
            std::mem::size_of::<TestRunAttr>(),
        )
    };
    if result != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(TestRun {
        retval: attr.retval as i32,
        nanoseconds: attr.duration,
    })
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

/// One TCP segment without payload.
#[derive(Clone, Copy, Debug)]
pub struct TcpPacket {
    pub source: Ipv4Addr,
    pub destination: Ipv4Addr,
    pub source_port: u16,
    pub destination_port: u16,
    pub flags: u8,
}

const ETHERNET_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const TCP_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;

impl TcpPacket {
    /// The Ethernet frame: locally administered MAC addresses, IPv4 without options (DF set),
    /// TCP without options; both checksums valid.
    pub fn frame(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(ETHERNET_LEN + IPV4_LEN + TCP_LEN);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());

        let mut ip = [0u8; IPV4_LEN];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((IPV4_LEN + TCP_LEN) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&1u16.to_be_bytes());
        ip[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = IPPROTO_TCP;
        ip[12..16].copy_from_slice(&self.source.octets());
        ip[16..20].copy_from_slice(&self.destination.octets());
        let checksum = internet_checksum(&[&ip]);
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&ip);

        let mut tcp = [0u8; TCP_LEN];
        tcp[0..2].copy_from_slice(&self.source_port.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.destination_port.to_be_bytes());
        tcp[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
        if self.flags & TCP_ACK != 0 {
            tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
        }
        tcp[12] = ((TCP_LEN / 4) as u8) << 4;
        tcp[13] = self.flags;
        tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&self.source.octets());
        pseudo[4..8].copy_from_slice(&self.destination.octets());
        pseudo[9] = IPPROTO_TCP;
        pseudo[10..12].copy_from_slice(&(TCP_LEN as u16).to_be_bytes());
        let checksum = internet_checksum(&[&pseudo, &tcp]);
        tcp[16..18].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&tcp);
        frame
    }
}

/// An ARP request frame: not IP, so the programs pass it right after reading the
/// Ethernet header (the floor of their per-packet cost).
pub fn arp_frame(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut frame = Vec::with_capacity(ETHERNET_LEN + 28);
    frame.extend_from_slice(&[0xff; 6]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&0x0806u16.to_be_bytes());
    // Ethernet, IPv4, address lengths 6 and 4, request.
    frame.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&sender.octets());
    frame.extend_from_slice(&[0; 6]);
    frame.extend_from_slice(&target.octets());
    frame
}

/// RFC 1071 checksum over the concatenation of `parts` (each of even length).
fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let high = u32::from(pair[0]) << 8;
            let low = pair.get(1).copied().map_or(0, u32::from);
            sum += high | low;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet() -> TcpPacket {
        TcpPacket {
            source: Ipv4Addr::new(10, 244, 0, 10),
            destination: Ipv4Addr::new(100, 64, 1, 2),
            source_port: 40_000,
            destination_port: 443,
            flags: TCP_SYN,
        }
    }

    #[test]
    fn frame_has_the_headers_the_programs_parse() {
        let frame = packet().frame();
        assert_eq!(frame.len(), 54);
        assert_eq!(&frame[12..14], &[0x08, 0x00], "ethertype IPv4");
        assert_eq!(frame[14] >> 4, 4, "IP version");
        assert_eq!(usize::from(frame[14] & 0x0f) * 4, 20, "IHL");
        assert_eq!(
            u16::from_be_bytes([frame[16], frame[17]]),
            40,
            "total length"
        );
        assert_eq!(frame[23], 6, "protocol TCP");
        assert_eq!(&frame[26..30], &[10, 244, 0, 10]);
        assert_eq!(&frame[30..34], &[100, 64, 1, 2]);
        assert_eq!(u16::from_be_bytes([frame[34], frame[35]]), 40_000);
        assert_eq!(u16::from_be_bytes([frame[36], frame[37]]), 443);
        assert_eq!(frame[46] >> 4, 5, "TCP data offset");
        assert_eq!(frame[47], TCP_SYN);
    }

    #[test]
    fn arp_frame_is_a_request() {
        let frame = arp_frame(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(frame.len(), 42);
        assert_eq!(&frame[12..14], &[0x08, 0x06]);
        assert_eq!(&frame[20..22], &[0, 1], "opcode request");
        assert_eq!(&frame[28..32], &[10, 0, 0, 1]);
        assert_eq!(&frame[38..42], &[10, 0, 0, 2]);
    }

    #[test]
    fn checksums_verify() {
        let frame = packet().frame();
        // A header with its checksum in place sums to zero (complemented: 0).
        assert_eq!(internet_checksum(&[&frame[14..34]]), 0);
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&frame[26..34]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(internet_checksum(&[&pseudo, &frame[34..54]]), 0);
        // The RFC 1071 example: 0x0001 f203 f4f5 f6f7 sums to 0xddf2, complemented 0x220d.
        assert_eq!(
            internet_checksum(&[&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
            0x220d
        );
    }

    #[test]
    fn attribute_block_points_at_the_packet() {
        let frame = packet().frame();
        let attr = TestRunAttr {
            prog_fd: 7,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat: 1_000_000,
            ..TestRunAttr::default()
        };
        // SAFETY: reading the bytes of a repr(C) struct of plain integers.
        let bytes: &[u8; 80] = unsafe { &*(&attr as *const TestRunAttr as *const [u8; 80]) };
        assert_eq!(u32::from_ne_bytes(bytes[0..4].try_into().unwrap()), 7);
        assert_eq!(u32::from_ne_bytes(bytes[8..12].try_into().unwrap()), 54);
        assert_eq!(
            u64::from_ne_bytes(bytes[16..24].try_into().unwrap()),
            frame.as_ptr() as u64
        );
        assert_eq!(
            u32::from_ne_bytes(bytes[32..36].try_into().unwrap()),
            1_000_000
        );
        assert!(
            bytes[64..80].iter().all(|&b| b == 0),
            "flags, cpu, batch_size, padding"
        );
    }
}
