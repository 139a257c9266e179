//! A bounded XML element tree over quick-xml, and the writer the builder uses.
//!
//! The reader keeps what CWMP needs of each element: its local name (prefixes are dropped, so `soap:Body`,
//! `SOAP-ENV:Body` and `Body` are the same), the namespace URI its prefix resolves to, its attributes by local
//! name, its text and its children. Everything is bounded by [`Limits`]: nesting depth, element count, text size.
//! Texts, unknown names and attribute values borrow from the document when they need no unescaping (the common
//! case), so a parsed Inform allocates little beyond its element vectors.
//! A `<!DOCTYPE>` is refused outright, and only the five predefined entities and character references are
//! resolved, so no entity is ever expanded ("billion laughs" fails at its first `&lol;`).

use std::borrow::Cow;
use std::sync::Arc;

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::events::{BytesStart, Event};

use super::CwmpError;

/// Bounds on what the reader accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document, bytes (after decompression).
    pub max_bytes: usize,
    /// Deepest nesting of elements.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
    /// Longest text of one element, bytes.
    pub max_text: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 << 20,
            max_depth: 32,
            max_elements: 200_000,
            max_text: 256 << 10,
        }
    }
}

/// One element of a parsed document, borrowing from the document's text where it can.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Element<'a> {
    /// Local name, without prefix (borrowed from the document).
    pub name: Cow<'a, str>,
    /// Namespace URI the element's prefix (or the default namespace) resolves to.
    pub ns: Option<Arc<str>>,
    /// Attributes by local name (namespace declarations excluded; borrowed from the document, or for the usual
    /// names and `xsd:` types from a static table, when they need no unescaping).
    pub attrs: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    /// Text content (concatenated, entities resolved; borrowed when it is one run of text with no reference).
    pub text: Cow<'a, str>,
    /// Child elements in document order.
    pub children: Vec<Element<'a>>,
}

impl<'a> Element<'a> {
    /// The first child with this local name.
    pub fn child(&self, name: &str) -> Option<&Element<'a>> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Children with this local name.
    pub fn children_named<'s>(
        &'s self,
        name: &'s str,
    ) -> impl Iterator<Item = &'s Element<'a>> + 's {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Trimmed text of the named child, or an error naming the missing element.
    pub fn text_of(&self, name: &str) -> Result<&str, CwmpError> {
        self.child(name)
            .map(|c| c.text.trim())
            .ok_or_else(|| CwmpError::Missing(format!("{}/{}", self.name, name)))
    }

    /// Trimmed text of the named child, empty when absent.
    pub fn text_or_empty(&self, name: &str) -> &str {
        self.child(name).map_or("", |c| c.text.trim())
    }

    /// The named child parsed as an unsigned integer (`0` when absent and `default_zero`).
    pub fn u32_of(&self, name: &str) -> Result<u32, CwmpError> {
        let t = self.text_of(name)?;
        t.parse().map_err(|_| {
            CwmpError::Invalid(format!(
                "{}/{name}: {t:?} is not an unsigned int",
                self.name
            ))
        })
    }

    /// The named child as a boolean (`1`/`true`, `0`/`false`).
    pub fn bool_of(&self, name: &str) -> Result<bool, CwmpError> {
        parse_bool(self.text_of(name)?)
            .ok_or_else(|| CwmpError::Invalid(format!("{}/{name}: not a boolean", self.name)))
    }

    /// An attribute by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// `s` with the lifetime of `doc` when it is a slice of it, else owned.
fn borrowed<'a>(doc: &'a str, s: &str) -> Cow<'a, str> {
    match within(doc, s) {
        Some(b) => Cow::Borrowed(b),
        None => Cow::Owned(s.to_owned()),
    }
}

/// `part` with the lifetime of `doc`, when `part` lies in `doc`'s memory: the reader lends element names and
/// attributes for the lifetime of its event only, but they are slices of the document it reads.
fn within<'a>(doc: &'a str, part: &str) -> Option<&'a str> {
    let start = (part.as_ptr() as usize).checked_sub(doc.as_ptr() as usize)?;
    let b = doc.get(start..start.checked_add(part.len())?)?;
    // Same address and length: the very bytes of `part`.
    (b.as_ptr() == part.as_ptr()).then_some(b)
}

/// `1`/`true` or `0`/`false`, as xsd:boolean allows.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "1" | "true" | "TRUE" | "True" => Some(true),
        "0" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// A namespace binding in scope: prefix (empty for the default namespace) and URI.
type Binding<'a> = (Cow<'a, str>, Arc<str>);

/// Parses `text` into its root element, within `limits`.
pub fn parse_document<'a>(text: &'a str, limits: &Limits) -> Result<Element<'a>, CwmpError> {
    if text.len() > limits.max_bytes {
        return Err(CwmpError::TooLarge {
            limit: limits.max_bytes,
        });
    }
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.trim_text(false);
    config.check_end_names = true;
    config.expand_empty_elements = false;

    let mut stack: Vec<(Element<'a>, usize)> = Vec::new(); // element, bindings in scope before it
    let mut bindings: Vec<Binding<'a>> = Vec::new();
    let mut root: Option<Element<'a>> = None;
    let mut elements = 0usize;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| CwmpError::Xml(e.to_string()))?;
        match event {
            Event::Start(start) | Event::Empty(start) if root.is_some() => {
                let _ = start;
                return Err(CwmpError::Xml("content after the root element".into()));
            }
            Event::Start(start) => {
                elements += 1;
                if elements > limits.max_elements || stack.len() >= limits.max_depth {
                    return Err(CwmpError::TooComplex);
                }
                let mark = bindings.len();
                let el = open_element(text, &start, &mut bindings)?;
                stack.push((el, mark));
            }
            Event::Empty(start) => {
                elements += 1;
                if elements > limits.max_elements || stack.len() >= limits.max_depth {
                    return Err(CwmpError::TooComplex);
                }
                let mark = bindings.len();
                let el = open_element(text, &start, &mut bindings)?;
                bindings.truncate(mark);
                attach(&mut stack, &mut root, el);
            }
            Event::End(_) => {
                let Some((el, mark)) = stack.pop() else {
                    return Err(CwmpError::Xml("unexpected end tag".into()));
                };
                bindings.truncate(mark);
                attach(&mut stack, &mut root, el);
            }
            Event::Text(t) => push_text(&mut stack, t.xml10_content(), limits)?,
            Event::CData(c) => push_text(&mut stack, c.xml10_content(), limits)?,
            Event::GeneralRef(r) => {
                let resolved: String = match r.resolve_char_ref() {
                    Ok(Some(ch)) => ch.to_string(),
                    Ok(None) => match &*r.xml10_content() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => {
                            return Err(CwmpError::Entity(truncate(other, 40)));
                        }
                    },
                    Err(e) => return Err(CwmpError::Xml(e.to_string())),
                };
                push_text(&mut stack, Cow::Owned(resolved), limits)?;
            }
            Event::DocType(_) => return Err(CwmpError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(CwmpError::Xml("document ends inside an element".into()));
    }
    root.ok_or_else(|| CwmpError::Xml("no root element".into()))
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn push_text<'a>(
    stack: &mut [(Element<'a>, usize)],
    s: Cow<'a, str>,
    limits: &Limits,
) -> Result<(), CwmpError> {
    match stack.last_mut() {
        Some((el, _)) => {
            if el.text.len() + s.len() > limits.max_text {
                return Err(CwmpError::TooLarge {
                    limit: limits.max_text,
                });
            }
            // The first run of text is kept as it came (borrowed, usually); a second one (around a reference,
            // a comment or a child) makes it owned.
            if el.text.is_empty() {
                el.text = s;
            } else {
                el.text.to_mut().push_str(&s);
            }
            Ok(())
        }
        // Whitespace around the root is fine; anything else is not XML we accept.
        None if s.trim().is_empty() => Ok(()),
        None => Err(CwmpError::Xml("text outside the root element".into())),
    }
}

fn attach<'a>(stack: &mut [(Element<'a>, usize)], root: &mut Option<Element<'a>>, el: Element<'a>) {
    match stack.last_mut() {
        Some((parent, _)) => parent.children.push(el),
        None => *root = Some(el),
    }
}

fn open_element<'a>(
    doc: &'a str,
    start: &BytesStart<'_>,
    bindings: &mut Vec<Binding<'a>>,
) -> Result<Element<'a>, CwmpError> {
    let mut attrs = Vec::new();
    // Most elements of an envelope have no attributes: their (empty) list is not walked.
    let has_attributes = !start
        .attributes_raw()
        .bytes()
        .all(|b| b.is_ascii_whitespace());
    if has_attributes {
        for attr in start.attributes() {
            let attr = attr.map_err(|e| CwmpError::Xml(e.to_string()))?;
            let key = attr.key.0;
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| CwmpError::Xml(e.to_string()))?;
            if key == "xmlns" {
                bindings.push((Cow::Borrowed(""), Arc::from(value.as_ref())));
            } else if let Some(prefix) = key.strip_prefix("xmlns:") {
                bindings.push((borrowed(doc, prefix), Arc::from(value.as_ref())));
            } else {
                let local = match key.bytes().rposition(|b| b == b':') {
                    Some(i) => &key[i + 1..],
                    None => key,
                };
                attrs.push((borrowed(doc, local), borrowed(doc, &value)));
            }
            if bindings.len() > 1024 {
                return Err(CwmpError::TooComplex);
            }
        }
    }
    let qname = start.name().0;
    // A byte search: names are short, and `:` is ASCII so the split is on a character boundary.
    let (prefix, local) = match qname.bytes().position(|b| b == b':') {
        Some(i) => (&qname[..i], &qname[i + 1..]),
        None => ("", qname),
    };
    let ns = bindings
        .iter()
        .rev()
        .find(|(p, _)| p == prefix)
        .map(|(_, uri)| uri.clone())
        .filter(|uri| !uri.is_empty()); // xmlns="" undeclares the default namespace
    if ns.is_none() && !prefix.is_empty() && !bindings.iter().any(|(p, _)| p == prefix) {
        return Err(CwmpError::Xml(format!(
            "undeclared prefix {:?}",
            truncate(prefix, 40)
        )));
    }
    Ok(Element {
        name: borrowed(doc, local),
        ns,
        attrs,
        text: Cow::Borrowed(""),
        children: Vec::new(),
    })
}

/// Escapes text for element content and attribute values.
/// A carriage return is written as `&#13;`, since a parser turns a literal one into a line feed.
pub fn escape(s: &str) -> std::borrow::Cow<'_, str> {
    // Most texts (names, numbers, plain values) have nothing to escape: one pass over the bytes tells.
    if !s
        .bytes()
        .any(|b| matches!(b, b'<' | b'>' | b'&' | b'"' | b'\'' | b'\r'))
    {
        return std::borrow::Cow::Borrowed(s);
    }
    let escaped = quick_xml::escape::escape(s);
    if escaped.contains('\r') {
        std::borrow::Cow::Owned(escaped.replace('\r', "&#13;"))
    } else {
        escaped
    }
}

/// Writes elements into a string: the builder's only output primitive.
#[derive(Debug, Default)]
pub struct XmlOut {
    /// The document so far.
    pub buf: String,
}

impl XmlOut {
    /// An empty document with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: String::with_capacity(n),
        }
    }

    /// `<cwmp:name>`.
    pub fn open_cwmp(&mut self, name: &str) {
        self.buf.push_str("<cwmp:");
        self.buf.push_str(name);
        self.buf.push('>');
    }

    /// `</cwmp:name>`.
    pub fn close_cwmp(&mut self, name: &str) {
        self.buf.push_str("</cwmp:");
        self.buf.push_str(name);
        self.buf.push('>');
    }

    /// `<name attrs>`.
    pub fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.buf.push('<');
        self.buf.push_str(name);
        for (k, v) in attrs {
            self.buf.push(' ');
            self.buf.push_str(k);
            self.buf.push_str("=\"");
            self.buf.push_str(&escape(v));
            self.buf.push('"');
        }
        self.buf.push('>');
    }

    /// `</name>`.
    pub fn close(&mut self, name: &str) {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
    }

    /// `<name>text</name>` with `text` escaped.
    pub fn leaf(&mut self, name: &str, text: &str) {
        self.leaf_with(name, &[], text);
    }

    /// `<name attrs>text</name>` with `text` escaped.
    pub fn leaf_with(&mut self, name: &str, attrs: &[(&str, &str)], text: &str) {
        self.open(name, attrs);
        self.buf.push_str(&escape(text));
        self.close(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_and_namespaces_whatever_the_prefix() {
        let doc = r#"<a:Envelope xmlns:a="urn:x"><a:Body xmlns="urn:d"><Inner k:t="v" xmlns:k="urn:k">x &amp; &#65;</Inner></a:Body></a:Envelope>"#;
        let root = parse_document(doc, &Limits::default()).unwrap();
        assert_eq!(root.name, "Envelope");
        assert_eq!(root.ns.as_deref(), Some("urn:x"));
        let inner = &root.children[0].children[0];
        assert_eq!(inner.name, "Inner");
        assert_eq!(inner.ns.as_deref(), Some("urn:d"));
        assert_eq!(inner.text, "x & A");
        assert_eq!(inner.attr("t"), Some("v"));
    }

    #[test]
    fn names_texts_and_attributes_borrow_from_the_document_unless_unescaped() {
        let doc = r#"<Inform><Name xsi:type="xsd:string" xmlns:xsi="urn:i">n</Name><Odd odd="a&amp;b">x&lt;y</Odd></Inform>"#;
        let root = parse_document(doc, &Limits::default()).unwrap();
        assert!(matches!(root.name, Cow::Borrowed("Inform")));
        let name = &root.children[0];
        assert!(matches!(name.attrs[0].1, Cow::Borrowed("xsd:string")));
        assert!(matches!(name.text, Cow::Borrowed("n")));
        let odd = &root.children[1];
        assert_eq!(odd.name, "Odd");
        assert_eq!(odd.attr("odd"), Some("a&b"));
        assert!(matches!(odd.attrs[0].1, Cow::Owned(_)));
        assert_eq!(odd.text, "x<y");
        // A string that is not in the document is never taken for a slice of it.
        assert_eq!(within(doc, &String::from("Inform")), None);
        assert_eq!(within(doc, &doc[1..7]), Some("Inform"));
    }

    #[test]
    fn escape_leaves_plain_text_alone_and_escapes_the_rest() {
        assert!(matches!(
            escape("Device.WiFi.SSID.1 value 42"),
            Cow::Borrowed(_)
        ));
        assert_eq!(escape("a<b>&\"c'\rd"), "a&lt;b&gt;&amp;&quot;c&apos;&#13;d");
        let doc = format!("<a>{}</a>", escape("x\r<y>&"));
        assert_eq!(
            parse_document(&doc, &Limits::default()).unwrap().text,
            "x\r<y>&"
        );
    }

    #[test]
    fn doctype_and_custom_entities_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert!(matches!(
            parse_document(bomb, &Limits::default()),
            Err(CwmpError::Doctype)
        ));
        assert!(matches!(
            parse_document("<a>&lol;</a>", &Limits::default()),
            Err(CwmpError::Entity(_))
        ));
    }

    #[test]
    fn limits_hold() {
        let limits = Limits {
            max_depth: 4,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document("<a><b><c><d><e/></d></c></b></a>", &limits),
            Err(CwmpError::TooComplex)
        ));
        let limits = Limits {
            max_text: 8,
            ..Limits::default()
        };
        assert!(matches!(
            parse_document("<a>0123456789</a>", &limits),
            Err(CwmpError::TooLarge { .. })
        ));
        assert!(parse_document("<a><b></a>", &Limits::default()).is_err());
        assert!(parse_document("<a></a><b/>", &Limits::default()).is_err());
        assert!(parse_document("<p:a/>", &Limits::default()).is_err());
    }
}
