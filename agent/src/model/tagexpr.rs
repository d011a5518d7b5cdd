//! Tag filter expressions of dynamic address groups: `'web' and ('prod' or not 'legacy')`.
//!
//! Precedence: `not` binds tightest, then `and`, then `or`; parentheses group. Tags are
//! single- or double-quoted, or bare words. Keywords are case-insensitive.
//!
//! A filter matches an address object when the object's tags satisfy it, and a workload when
//! its labels do: a tag `key=value` (or `key:value`) holds when the workload has label `key`
//! with exactly that value. Neither `=` nor `:` can appear in a Kubernetes label key or value,
//! so the split is unambiguous. A tag without `=` or `:` never matches a workload label.

use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TagExpr {
    Tag(String),
    Not(Box<TagExpr>),
    And(Vec<TagExpr>),
    Or(Vec<TagExpr>),
}

/// A filter that could not be parsed; `offset` is the byte offset in the filter text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid tag filter {filter:?} at character {offset}: {problem}")]
pub struct TagExprError {
    pub filter: String,
    pub offset: usize,
    pub problem: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Open,
    Close,
    And,
    Or,
    Not,
    Tag(String),
}

const MAX_FILTER_NESTING: usize = 64;

fn tokenize(filter: &str) -> Result<Vec<(usize, Token)>, TagExprError> {
    let err = |offset: usize, problem: &str| TagExprError {
        filter: filter.to_string(),
        offset,
        problem: problem.to_string(),
    };
    let mut tokens = Vec::new();
    let chars: Vec<(usize, char)> = filter.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (offset, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                tokens.push((offset, Token::Open));
                i += 1;
            }
            ')' => {
                tokens.push((offset, Token::Close));
                i += 1;
            }
            '\'' | '"' => {
                let quote = c;
                let mut j = i + 1;
                let mut text = String::new();
                while j < chars.len() && chars[j].1 != quote {
                    text.push(chars[j].1);
                    j += 1;
                }
                if j == chars.len() {
                    return Err(err(offset, "unterminated quoted tag"));
                }
                if text.is_empty() {
                    return Err(err(offset, "empty tag name"));
                }
                tokens.push((offset, Token::Tag(text)));
                i = j + 1;
            }
            _ => {
                let mut j = i;
                let mut word = String::new();
                while j < chars.len() {
                    let ch = chars[j].1;
                    if ch.is_whitespace() || matches!(ch, '(' | ')' | '\'' | '"') {
                        break;
                    }
                    word.push(ch);
                    j += 1;
                }
                let token = match word.to_ascii_lowercase().as_str() {
                    "and" => Token::And,
                    "or" => Token::Or,
                    "not" => Token::Not,
                    _ => Token::Tag(word),
                };
                tokens.push((offset, token));
                i = j;
            }
        }
    }
    Ok(tokens)
}

struct Parser<'a> {
    filter: &'a str,
    tokens: Vec<(usize, Token)>,
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn err(&self, problem: &str) -> TagExprError {
        let offset = self
            .tokens
            .get(self.pos)
            .map_or(self.filter.len(), |(o, _)| *o);
        TagExprError {
            filter: self.filter.to_string(),
            offset,
            problem: problem.to_string(),
        }
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn or_expr(&mut self) -> Result<TagExpr, TagExprError> {
        let mut terms = vec![self.and_expr()?];
        while self.peek() == Some(&Token::Or) {
            self.pos += 1;
            terms.push(self.and_expr()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            TagExpr::Or(terms)
        })
    }

    fn and_expr(&mut self) -> Result<TagExpr, TagExprError> {
        let mut terms = vec![self.unary()?];
        while self.peek() == Some(&Token::And) {
            self.pos += 1;
            terms.push(self.unary()?);
        }
        Ok(if terms.len() == 1 {
            terms.remove(0)
        } else {
            TagExpr::And(terms)
        })
    }

    fn unary(&mut self) -> Result<TagExpr, TagExprError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_NESTING {
            return Err(self.err("filter nested too deeply"));
        }
        let result = match self.peek().cloned() {
            Some(Token::Not) => {
                self.pos += 1;
                Ok(TagExpr::Not(Box::new(self.unary()?)))
            }
            Some(Token::Open) => {
                self.pos += 1;
                let inner = self.or_expr()?;
                if self.peek() != Some(&Token::Close) {
                    return Err(self.err("expected ')'"));
                }
                self.pos += 1;
                Ok(inner)
            }
            Some(Token::Tag(tag)) => {
                self.pos += 1;
                Ok(TagExpr::Tag(tag))
            }
            Some(_) => Err(self.err("expected a tag, 'not' or '('")),
            None => Err(self.err("filter ends where a tag was expected")),
        };
        self.depth -= 1;
        result
    }
}

impl TagExpr {
    pub fn parse(filter: &str) -> Result<TagExpr, TagExprError> {
        let tokens = tokenize(filter)?;
        let mut parser = Parser {
            filter,
            tokens,
            pos: 0,
            depth: 0,
        };
        let expr = parser.or_expr()?;
        if parser.pos != parser.tokens.len() {
            return Err(parser.err("unexpected text after the end of the filter"));
        }
        Ok(expr)
    }

    /// Evaluates the filter with `has_tag` deciding each tag.
    pub fn matches(&self, has_tag: &dyn Fn(&str) -> bool) -> bool {
        match self {
            TagExpr::Tag(t) => has_tag(t),
            TagExpr::Not(inner) => !inner.matches(has_tag),
            TagExpr::And(terms) => terms.iter().all(|t| t.matches(has_tag)),
            TagExpr::Or(terms) => terms.iter().any(|t| t.matches(has_tag)),
        }
    }

    /// Evaluates the filter over a whole population of tagged objects at once: `members(tag)`
    /// lists the (ascending) indices of the objects carrying `tag`. Returns one bit per
    /// object. A dynamic group is resolved with a few bitset operations instead of testing
    /// every object against the filter, which matters with 100,000 objects and hundreds of
    /// dynamic groups.
    pub fn select<'a>(&self, population: usize, members: &dyn Fn(&str) -> &'a [u32]) -> Bitset {
        match self {
            TagExpr::Tag(t) => Bitset::from_indices(population, members(t)),
            TagExpr::Not(inner) => {
                let mut set = inner.select(population, members);
                set.complement();
                set
            }
            TagExpr::And(terms) => {
                let mut set = Bitset::full(population);
                for term in terms {
                    set.intersect(&term.select(population, members));
                }
                set
            }
            TagExpr::Or(terms) => {
                let mut set = Bitset::empty(population);
                for term in terms {
                    set.union(&term.select(population, members));
                }
                set
            }
        }
    }

    pub fn matches_tags(&self, tags: &[String]) -> bool {
        self.matches(&|t| tags.iter().any(|have| have == t))
    }

    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches(&|tag| tag_matches_labels(tag, labels))
    }

    /// All tag names the filter mentions.
    pub fn tags(&self) -> Vec<&str> {
        let mut out = Vec::new();
        self.collect_tags(&mut out);
        out
    }

    fn collect_tags<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            TagExpr::Tag(t) => out.push(t),
            TagExpr::Not(inner) => inner.collect_tags(out),
            TagExpr::And(terms) | TagExpr::Or(terms) => {
                terms.iter().for_each(|t| t.collect_tags(out))
            }
        }
    }
}

/// A set of object indices below a fixed population size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitset {
    words: Vec<u64>,
    population: usize,
}

impl Bitset {
    pub fn empty(population: usize) -> Self {
        Bitset {
            words: vec![0; population.div_ceil(64)],
            population,
        }
    }

    pub fn full(population: usize) -> Self {
        let mut set = Bitset::empty(population);
        set.complement();
        set
    }

    /// Indices at or above `population` are ignored.
    pub fn from_indices(population: usize, indices: &[u32]) -> Self {
        let mut set = Bitset::empty(population);
        for &index in indices {
            let index = index as usize;
            if index < population {
                set.words[index / 64] |= 1 << (index % 64);
            }
        }
        set
    }

    pub fn complement(&mut self) {
        for word in &mut self.words {
            *word = !*word;
        }
        // Keep the bits past the population clear, so iteration never yields them.
        let tail = self.population % 64;
        if let (Some(last), true) = (self.words.last_mut(), tail != 0) {
            *last &= (1u64 << tail) - 1;
        }
    }

    pub fn intersect(&mut self, other: &Bitset) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a &= b);
    }

    pub fn union(&mut self, other: &Bitset) {
        self.words
            .iter_mut()
            .zip(&other.words)
            .for_each(|(a, b)| *a |= b);
    }

    /// The indices in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                (rest != 0).then(|| {
                    let bit = rest.trailing_zeros() as usize;
                    rest &= rest - 1;
                    w * 64 + bit
                })
            })
        })
    }
}

/// `key=value` or `key:value` against a label map (see the module documentation).
pub fn tag_matches_labels(tag: &str, labels: &BTreeMap<String, String>) -> bool {
    let split = tag.split_once('=').or_else(|| tag.split_once(':'));
    match split {
        Some((key, value)) => labels.get(key).is_some_and(|v| v == value),
        None => false,
    }
}

impl fmt::Display for TagExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let join = |f: &mut fmt::Formatter<'_>, terms: &[TagExpr], op: &str| {
            write!(f, "(")?;
            for (i, t) in terms.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{t}")?;
            }
            write!(f, ")")
        };
        match self {
            TagExpr::Tag(t) => write!(f, "'{t}'"),
            TagExpr::Not(inner) => write!(f, "not {inner}"),
            TagExpr::And(terms) => join(f, terms, "and"),
            TagExpr::Or(terms) => join(f, terms, "or"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn precedence_and_parentheses() {
        let e = TagExpr::parse("'a' or 'b' and not 'c'").unwrap();
        assert!(e.matches_tags(&tags(&["a", "c"])));
        assert!(e.matches_tags(&tags(&["b"])));
        assert!(!e.matches_tags(&tags(&["b", "c"])));
        let e = TagExpr::parse("('a' or 'b') and not 'c'").unwrap();
        assert!(!e.matches_tags(&tags(&["a", "c"])));
        assert!(e.matches_tags(&tags(&["a"])));
        let e = TagExpr::parse("web AND \"prod env\"").unwrap();
        assert!(e.matches_tags(&tags(&["web", "prod env"])));
        assert!(!e.matches_tags(&tags(&["web"])));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let err = TagExpr::parse("'a' and (").unwrap_err();
        assert_eq!(err.offset, 9);
        assert!(TagExpr::parse("'a' 'b'").is_err());
        assert!(TagExpr::parse("'a").is_err());
        assert!(TagExpr::parse("").is_err());
        assert!(TagExpr::parse(&"(".repeat(500)).is_err());
    }

    #[test]
    fn labels() {
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        assert!(TagExpr::parse("'app=web'").unwrap().matches_labels(&labels));
        assert!(TagExpr::parse("'app:web'").unwrap().matches_labels(&labels));
        assert!(!TagExpr::parse("'app=db'").unwrap().matches_labels(&labels));
        assert!(!TagExpr::parse("'web'").unwrap().matches_labels(&labels));
        assert!(
            TagExpr::parse("not 'app=db'")
                .unwrap()
                .matches_labels(&labels)
        );
    }
}

#[cfg(test)]
mod select_tests {
    use proptest::prelude::*;

    use super::TagExpr;

    fn expr() -> impl Strategy<Value = TagExpr> {
        let leaf = prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")]
            .prop_map(|t| TagExpr::Tag(t.to_owned()));
        leaf.prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                inner.clone().prop_map(|e| TagExpr::Not(Box::new(e))),
                prop::collection::vec(inner.clone(), 1..4).prop_map(TagExpr::And),
                prop::collection::vec(inner, 1..4).prop_map(TagExpr::Or),
            ]
        })
    }

    proptest! {
        /// The bitset evaluation selects exactly the objects the per-object evaluation
        /// matches, populations crossing word boundaries included.
        #[test]
        fn select_equals_per_object_matching(
            filter in expr(),
            objects in prop::collection::vec(
                prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")], 0..3),
                0..150,
            ),
        ) {
            let tags: Vec<Vec<String>> =
                objects.iter().map(|t| t.iter().map(|s| s.to_string()).collect()).collect();
            let mut index: std::collections::HashMap<&str, Vec<u32>> = Default::default();
            for (i, object) in tags.iter().enumerate() {
                for tag in object {
                    let list = index.entry(tag.as_str()).or_default();
                    if list.last() != Some(&(i as u32)) {
                        list.push(i as u32);
                    }
                }
            }
            let members = |tag: &str| index.get(tag).map_or(&[][..], Vec::as_slice);
            let selected: Vec<usize> = filter.select(tags.len(), &members).iter().collect();
            let expected: Vec<usize> =
                (0..tags.len()).filter(|&i| filter.matches_tags(&tags[i])).collect();
            prop_assert_eq!(selected, expected);
        }
    }
}
