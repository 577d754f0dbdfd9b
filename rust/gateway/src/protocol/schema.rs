//! The schema as data, and its renderings: the SBE-style XML schema (`docs/protocol.xml`) and
//! the message and code tables of `docs/protocol.md`.
//!
//! The descriptions come from the message definitions themselves (field names, types, sizes
//! and doc comments, collected by the `messages!` and `codes!` macros), so the published
//! layouts cannot drift from the codec: a test renders both and compares them with the
//! committed files (`BOURSE_BLESS=1 cargo test -p bourse-gateway` rewrites them).

use std::fmt::Write;

use super::codes::ENUM_SPECS;
use super::messages::Message;
use super::wire::{LoginFlags, OPTIONAL_MARKET_SPEC, ORDER_REF_SPEC};
use super::{HEADER_LEN, LENGTH_PREFIX_LEN, MAX_FRAME_LEN, SCHEMA_ID, SCHEMA_VERSION};

/// Who sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// The client.
    ClientToServer,
    /// The server.
    ServerToClient,
    /// Either side.
    Both,
}

impl Direction {
    /// Short form for tables.
    pub fn arrow(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client → server",
            Direction::ServerToClient => "server → client",
            Direction::Both => "both ways",
        }
    }
}

/// Which part of the protocol a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Category {
    /// Login, heartbeats, logout, errors: every session kind.
    Session,
    /// Order-entry and drop-copy sessions.
    OrderEntry,
    /// Market-data sessions.
    MarketData,
}

impl Category {
    fn title(self) -> &'static str {
        match self {
            Category::Session => "Session messages",
            Category::OrderEntry => "Order-entry messages",
            Category::MarketData => "Market-data messages",
        }
    }
}

/// One field of a message.
#[derive(Clone, Copy, Debug)]
pub struct FieldSpec {
    /// Field name (snake_case, as in Rust).
    pub name: &'static str,
    /// Schema type name.
    pub ty: &'static str,
    /// Bytes.
    pub size: usize,
    /// Meaning.
    pub doc: &'static str,
}

/// One message.
#[derive(Clone, Copy, Debug)]
pub struct MessageSpec {
    /// Name.
    pub name: &'static str,
    /// Template id.
    pub template_id: u16,
    /// Who sends it.
    pub direction: Direction,
    /// Where it belongs.
    pub category: Category,
    /// Meaning.
    pub doc: &'static str,
    /// Fields in wire order, at consecutive offsets.
    pub fields: &'static [FieldSpec],
}

impl MessageSpec {
    /// Bytes of the body.
    pub fn block_length(&self) -> usize {
        self.fields.iter().map(|f| f.size).sum()
    }
    /// The fields with their body offsets.
    pub fn with_offsets(&self) -> impl Iterator<Item = (usize, &FieldSpec)> {
        self.fields.iter().scan(0, |off, f| {
            let o = *off;
            *off += f.size;
            Some((o, f))
        })
    }
}

/// One value of a code table.
#[derive(Clone, Copy, Debug)]
pub struct ValueSpec {
    /// Name.
    pub name: &'static str,
    /// Wire code.
    pub code: u64,
    /// Meaning.
    pub doc: &'static str,
}

/// A code table.
#[derive(Clone, Copy, Debug)]
pub struct EnumSpec {
    /// Name.
    pub name: &'static str,
    /// Encoding primitive (`uint8`, `uint16`).
    pub encoding: &'static str,
    /// Meaning.
    pub doc: &'static str,
    /// The values in code order.
    pub values: &'static [ValueSpec],
}

/// A flag set: (choice name, bit, meaning).
#[derive(Clone, Copy, Debug)]
pub struct SetSpec {
    /// Name.
    pub name: &'static str,
    /// Encoding primitive.
    pub encoding: &'static str,
    /// Meaning.
    pub doc: &'static str,
    /// The defined bits.
    pub choices: &'static [(&'static str, u8, &'static str)],
}

/// One member of a composite.
#[derive(Clone, Copy, Debug)]
pub struct SubFieldSpec {
    /// Name.
    pub name: &'static str,
    /// Type name.
    pub ty: &'static str,
    /// Meaning.
    pub doc: &'static str,
}

/// A composite type (fixed members at consecutive offsets).
#[derive(Clone, Copy, Debug)]
pub struct CompositeSpec {
    /// Name.
    pub name: &'static str,
    /// Meaning.
    pub doc: &'static str,
    /// Members.
    pub fields: &'static [SubFieldSpec],
}

/// Named types that are plain primitives or fixed byte arrays: (name, primitive, length, meaning).
pub const SIMPLE_TYPES: &[(&str, &str, usize, &str)] = &[
    ("MarketId", "uint32", 1, "A market id"),
    ("Nonce", "uint8", 32, "32 random bytes issued by the server"),
    ("Signature", "uint8", 32, "An HMAC-SHA256 tag"),
];

/// The composites.
pub const COMPOSITES: &[CompositeSpec] = &[ORDER_REF_SPEC, OPTIONAL_MARKET_SPEC];

/// The flag sets.
pub const SETS: &[SetSpec] = &[LoginFlags::SPEC];

fn is_primitive(ty: &str) -> bool {
    matches!(ty, "uint8" | "uint16" | "uint32" | "uint64")
}

/// Whether a type name is defined by the schema (a primitive or one of the named types).
pub fn is_known_type(ty: &str) -> bool {
    is_primitive(ty)
        || SIMPLE_TYPES.iter().any(|t| t.0 == ty)
        || COMPOSITES.iter().any(|c| c.name == ty)
        || SETS.iter().any(|s| s.name == ty)
        || ENUM_SPECS.iter().any(|e| e.name == ty)
}

fn clean(doc: &str) -> String {
    doc.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn xml(doc: &str) -> String {
    clean(doc)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn md(doc: &str) -> String {
    clean(doc).replace('|', "\\|")
}

/// `docs/protocol.xml`.
pub fn render_xml() -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        w,
        "<!-- Generated from rust/gateway/src/protocol: do not edit. Regenerate with \
         `BOURSE_BLESS=1 cargo test -p bourse-gateway`. -->"
    );
    let _ = writeln!(
        w,
        r#"<sbe:messageSchema xmlns:sbe="http://fixprotocol.io/2016/sbe" package="bourse" id="{SCHEMA_ID}" version="{SCHEMA_VERSION}" semanticVersion="{SCHEMA_VERSION}.0" byteOrder="littleEndian" description="Bourse order entry, drop copy and market data. Each frame is a uint16 length (header + body, at most {MAX_FRAME_LEN}) followed by the message header and the body.">"#
    );
    let _ = writeln!(w, "  <types>");
    let _ = writeln!(
        w,
        r#"    <composite name="messageHeader" description="The SBE message header ({HEADER_LEN} bytes) after the {LENGTH_PREFIX_LEN}-byte length prefix.">"#
    );
    for n in ["blockLength", "templateId", "schemaId", "version"] {
        let _ = writeln!(w, r#"      <type name="{n}" primitiveType="uint16"/>"#);
    }
    let _ = writeln!(w, "    </composite>");
    for (name, prim, len, doc) in SIMPLE_TYPES {
        let length = if *len > 1 { format!(r#" length="{len}""#) } else { String::new() };
        let _ = writeln!(
            w,
            r#"    <type name="{name}" primitiveType="{prim}"{length} description="{}"/>"#,
            xml(doc)
        );
    }
    for e in ENUM_SPECS {
        let _ = writeln!(
            w,
            r#"    <enum name="{}" encodingType="{}" description="{}">"#,
            e.name,
            e.encoding,
            xml(e.doc)
        );
        for v in e.values {
            let _ = writeln!(
                w,
                r#"      <validValue name="{}" description="{}">{}</validValue>"#,
                v.name,
                xml(v.doc),
                v.code
            );
        }
        let _ = writeln!(w, "    </enum>");
    }
    for set in SETS {
        let _ = writeln!(
            w,
            r#"    <set name="{}" encodingType="{}" description="{}">"#,
            set.name,
            set.encoding,
            xml(set.doc)
        );
        for (name, bit, doc) in set.choices {
            let _ = writeln!(
                w,
                r#"      <choice name="{name}" description="{}">{bit}</choice>"#,
                xml(doc)
            );
        }
        let _ = writeln!(w, "    </set>");
    }
    for c in COMPOSITES {
        let _ = writeln!(w, r#"    <composite name="{}" description="{}">"#, c.name, xml(c.doc));
        for f in c.fields {
            if is_primitive(f.ty) {
                let _ = writeln!(
                    w,
                    r#"      <type name="{}" primitiveType="{}" description="{}"/>"#,
                    f.name,
                    f.ty,
                    xml(f.doc)
                );
            } else {
                let _ = writeln!(w, r#"      <ref name="{}" type="{}"/>"#, f.name, f.ty);
            }
        }
        let _ = writeln!(w, "    </composite>");
    }
    let _ = writeln!(w, "  </types>");
    for m in Message::SPECS {
        let _ = writeln!(
            w,
            r#"  <sbe:message name="{}" id="{}" blockLength="{}" description="[{}] {}">"#,
            m.name,
            m.template_id,
            m.block_length(),
            m.direction.arrow(),
            xml(m.doc)
        );
        for (i, (off, f)) in m.with_offsets().enumerate() {
            let _ = writeln!(
                w,
                r#"    <field name="{}" id="{}" type="{}" offset="{off}" description="{}"/>"#,
                f.name,
                i + 1,
                f.ty,
                xml(f.doc)
            );
        }
        let _ = writeln!(w, "  </sbe:message>");
    }
    let _ = writeln!(w, "</sbe:messageSchema>");
    s
}

/// The generated message tables of `docs/protocol.md`.
pub fn render_md_messages() -> String {
    let mut s = String::new();
    let w = &mut s;
    for cat in [Category::Session, Category::OrderEntry, Category::MarketData] {
        let _ = writeln!(w, "### {}\n", cat.title());
        for m in Message::SPECS.iter().filter(|m| m.category == cat) {
            let bl = m.block_length();
            let _ = writeln!(
                w,
                "#### {} — template {}, {}\n\n{}\n\nBlock length {bl}; frame {} bytes with the \
                 length prefix.\n",
                m.name,
                m.template_id,
                m.direction.arrow(),
                md(m.doc),
                LENGTH_PREFIX_LEN + HEADER_LEN + bl
            );
            if m.fields.is_empty() {
                let _ = writeln!(w, "No fields.\n");
                continue;
            }
            let _ = writeln!(w, "| offset | size | type | field | meaning |");
            let _ = writeln!(w, "|---:|---:|---|---|---|");
            for (off, f) in m.with_offsets() {
                let _ =
                    writeln!(w, "| {off} | {} | {} | `{}` | {} |", f.size, f.ty, f.name, md(f.doc));
            }
            let _ = writeln!(w);
        }
    }
    s
}

/// The generated type and code tables of `docs/protocol.md`.
pub fn render_md_codes() -> String {
    let mut s = String::new();
    let w = &mut s;
    let _ = writeln!(w, "| type | encoding | meaning |");
    let _ = writeln!(w, "|---|---|---|");
    for p in ["uint8", "uint16", "uint32", "uint64"] {
        let _ = writeln!(w, "| {p} | {p} | unsigned integer, little-endian |");
    }
    for (name, prim, len, doc) in SIMPLE_TYPES {
        let enc = if *len > 1 { format!("{prim}[{len}]") } else { prim.to_string() };
        let _ = writeln!(w, "| {name} | {enc} | {} |", md(doc));
    }
    for set in SETS {
        let bits: Vec<String> =
            set.choices.iter().map(|(n, b, d)| format!("bit {b} `{n}`: {}", md(d))).collect();
        let _ = writeln!(
            w,
            "| {} | {} (flag set) | {} {} |",
            set.name,
            set.encoding,
            md(set.doc),
            bits.join("; ")
        );
    }
    for c in COMPOSITES {
        let members: Vec<String> =
            c.fields.iter().map(|f| format!("`{}` {} ({})", f.name, f.ty, md(f.doc))).collect();
        let _ = writeln!(w, "| {} | composite: {} | {} |", c.name, members.join(", "), md(c.doc));
    }
    let _ = writeln!(w);
    for e in ENUM_SPECS {
        let _ = writeln!(w, "#### {} ({})\n\n{}\n", e.name, e.encoding, md(e.doc));
        let _ = writeln!(w, "| code | name | meaning |");
        let _ = writeln!(w, "|---:|---|---|");
        for v in e.values {
            let _ = writeln!(w, "| {} | {} | {} |", v.code, v.name, md(v.doc));
        }
        let _ = writeln!(w);
    }
    s
}

/// Replace the text between `<!-- BEGIN GENERATED: {name} -->` and
/// `<!-- END GENERATED: {name} -->` in `doc` with `content`; `None` if the markers are missing.
pub fn splice(doc: &str, name: &str, content: &str) -> Option<String> {
    let begin = format!("<!-- BEGIN GENERATED: {name} -->\n");
    let end = format!("<!-- END GENERATED: {name} -->");
    let b = doc.find(&begin)? + begin.len();
    let e = b + doc[b..].find(&end)?;
    Some(format!("{}{}{}", &doc[..b], content, &doc[e..]))
}
