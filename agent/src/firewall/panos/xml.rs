//! Hardened XML reading: size, depth and node limits, and no DTDs at all.
//!
//! roxmltree already refuses non-empty DTDs when `allow_dtd` is off and guards against entity
//! loops, but it accepts an empty `<!DOCTYPE x>`. PAN-OS never writes a DOCTYPE, so any
//! DOCTYPE in the prolog is refused before parsing.

use roxmltree::{Document, Node, ParsingOptions};

use super::error::PanosError;

/// Resource limits for one configuration document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_depth: usize,
    pub max_nodes: u32,
}

impl Default for Limits {
    /// Sized for large Panorama exports (hundreds of thousands of objects) with headroom.
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024 * 1024,
            max_depth: 128,
            max_nodes: 16_000_000,
        }
    }
}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let mut end = offset.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let before = &text[..end];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line as u32, column as u32)
}

/// Byte offset of a DOCTYPE declaration in the prolog (before the root element), if any.
/// Comments and processing instructions in the prolog are skipped.
fn doctype_in_prolog(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut i = if text.starts_with('\u{feff}') { 3 } else { 0 };
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let rest = &text[i..];
        if rest.starts_with("<?") {
            i += rest.find("?>").map_or(bytes.len(), |end| end + 2);
        } else if rest.starts_with("<!--") {
            i += rest.find("-->").map_or(bytes.len(), |end| end + 3);
        } else if rest
            .as_bytes()
            .get(..9)
            .is_some_and(|head| head.eq_ignore_ascii_case(b"<!DOCTYPE"))
        {
            return Some(i);
        } else if rest.starts_with("<!") {
            // `<!ENTITY` or other markup declarations outside a DOCTYPE: refuse as well.
            return Some(i);
        } else {
            return None;
        }
    }
    None
}

/// Parses `text` with the limits applied. `origin` names the file or API in errors.
pub fn parse_document<'a>(
    text: &'a str,
    origin: &str,
    limits: Limits,
) -> Result<Document<'a>, PanosError> {
    if text.len() > limits.max_bytes {
        return Err(PanosError::TooLarge {
            origin: origin.to_string(),
            size: text.len(),
            limit: limits.max_bytes,
        });
    }
    if let Some(offset) = doctype_in_prolog(text) {
        let (line, column) = line_column(text, offset);
        return Err(PanosError::DtdRefused {
            origin: origin.to_string(),
            line,
            column,
        });
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: limits.max_nodes,
        ..ParsingOptions::default()
    };
    let doc = Document::parse_with_options(text, options).map_err(|e| match e {
        roxmltree::Error::DtdDetected => PanosError::DtdRefused {
            origin: origin.to_string(),
            line: 1,
            column: 1,
        },
        roxmltree::Error::NodesLimitReached => PanosError::TooManyNodes {
            origin: origin.to_string(),
            limit: limits.max_nodes,
        },
        other => {
            let pos = other.pos();
            PanosError::Xml {
                origin: origin.to_string(),
                line: pos.row,
                column: pos.col,
                message: other.to_string(),
            }
        }
    })?;
    check_depth(&doc, origin, limits.max_depth)?;
    Ok(doc)
}

fn check_depth(doc: &Document<'_>, origin: &str, limit: usize) -> Result<(), PanosError> {
    // Descendants come in document order, so a parent's depth is known before its children.
    let mut depth = vec![0u32; doc.descendants().len()];
    for node in doc.descendants() {
        let own = node.parent().map_or(0, |p| {
            depth[p.id().get_usize()] + u32::from(node.is_element())
        });
        depth[node.id().get_usize()] = own;
        if own as usize > limit {
            let pos = doc.text_pos_at(node.range().start);
            return Err(PanosError::TooDeep {
                origin: origin.to_string(),
                line: pos.row,
                column: pos.col,
                limit,
            });
        }
    }
    Ok(())
}

/// Small navigation helpers over element children.
pub(crate) fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

pub(crate) fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

pub(crate) fn path<'a, 'input>(node: Node<'a, 'input>, steps: &[&str]) -> Option<Node<'a, 'input>> {
    steps.iter().try_fold(node, |n, step| child(n, step))
}

/// All `<entry>` children under the element at `steps`.
pub(crate) fn entries<'a, 'input>(node: Node<'a, 'input>, steps: &[&str]) -> Vec<Node<'a, 'input>> {
    path(node, steps)
        .map(|n| children(n, "entry").collect())
        .unwrap_or_default()
}

/// Trimmed text of an element (concatenated text children).
pub(crate) fn text_of(node: Node<'_, '_>) -> String {
    node.children()
        .filter(|c| c.is_text())
        .filter_map(|c| c.text())
        .collect::<String>()
        .trim()
        .to_string()
}

pub(crate) fn child_text(node: Node<'_, '_>, name: &str) -> Option<String> {
    child(node, name).map(text_of)
}

/// `<name><member>a</member><member>b</member></name>` -> `[a, b]`.
pub(crate) fn members(node: Node<'_, '_>, name: &str) -> Vec<String> {
    child(node, name)
        .map(|n| {
            children(n, "member")
                .map(text_of)
                .filter(|s| !s.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    /// Found by the fuzzer: a multi-byte character where the DOCTYPE check slices 9 bytes.
    #[test]
    fn prolog_check_survives_multibyte_characters() {
        let text = "]]><s><d\u{feff}g-dev<<<wo";
        assert!(parse_document(text, "fuzz.xml", Limits::default()).is_err());
        assert_eq!(doctype_in_prolog("<\u{feff}\u{feff}\u{feff}"), None);
        assert_eq!(line_column("a\u{feff}b", 2), (1, 2));
    }

    use super::*;

    #[test]
    fn refuses_doctype_even_empty() {
        let err = parse_document(
            "<?xml version=\"1.0\"?>\n<!DOCTYPE config>\n<config/>",
            "t.xml",
            Limits::default(),
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                PanosError::DtdRefused {
                    line: 2,
                    column: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn depth_limit() {
        let deep = format!("{}{}", "<a>".repeat(50), "</a>".repeat(50));
        let limits = Limits {
            max_depth: 20,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document(&deep, "t.xml", limits),
            Err(PanosError::TooDeep { limit: 20, .. })
        ));
        assert!(parse_document(&deep, "t.xml", Limits::default()).is_ok());
    }

    #[test]
    fn size_and_node_limits() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document("<config></config>", "t.xml", limits),
            Err(PanosError::TooLarge { .. })
        ));
        let many = format!("<a>{}</a>", "<b/>".repeat(100));
        let limits = Limits {
            max_nodes: 50,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document(&many, "t.xml", limits),
            Err(PanosError::TooManyNodes { .. })
        ));
    }

    #[test]
    fn line_column_of_offsets() {
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 0), (1, 1));
    }
}
