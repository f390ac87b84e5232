//! The W3C `traceparent` header (Trace Context, level 1): parsing that follows the
//! specification's rules for this and future versions, and formatting into a stack buffer.

use std::fmt;

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";

/// Length of a version `00` value: `00-` + 32 + `-` + 16 + `-` + 2.
pub const TRACEPARENT_LEN: usize = 55;

/// Flag bit: the caller may have recorded this trace.
pub const FLAG_SAMPLED: u8 = 0x01;

/// Flag bit (Trace Context level 2): the trace id's right-most 7 bytes are random.
pub const FLAG_RANDOM: u8 = 0x02;

/// The flags this library knows (level 2); others are sent as zero, as the specification
/// asks.
pub const FLAGS_KNOWN: u8 = FLAG_SAMPLED | FLAG_RANDOM;

/// A trace id: 16 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TraceId(pub [u8; 16]);

/// A span id (the W3C `parent-id`): 8 bytes, never all zero.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanId(pub [u8; 8]);

impl TraceId {
    /// A random trace id (never all zero).
    pub fn random() -> Self {
        loop {
            let id: [u8; 16] = rand::random();
            if id != [0; 16] {
                return Self(id);
            }
        }
    }
}

impl SpanId {
    /// A random span id (never all zero).
    pub fn random() -> Self {
        loop {
            let id: [u8; 8] = rand::random();
            if id != [0; 8] {
                return Self(id);
            }
        }
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 32];
        hex_into(&self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; 16];
        hex_into(&self.0, &mut out);
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

/// A parsed `traceparent`: which trace, which span sent it, and the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    /// The trace.
    pub trace_id: TraceId,
    /// The span of the sender (the receiver's parent).
    pub span_id: SpanId,
    /// The trace flags: [`FLAG_SAMPLED`] (level 1) and [`FLAG_RANDOM`] (level 2).
    pub flags: u8,
}

/// Why a `traceparent` value was not taken (the receiver then starts a new trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TraceParentError {
    /// Not `version-traceid-parentid-flags` with the lengths of the version.
    #[error("not version-traceid-parentid-flags with the lengths of its version")]
    Shape,
    /// A field holds something other than lower-case hexadecimal digits.
    #[error("a field holds something other than lower-case hexadecimal digits")]
    NotHex,
    /// The version is `ff`, which the specification forbids.
    #[error("version ff is forbidden")]
    ForbiddenVersion,
    /// The trace id is all zeros.
    #[error("the trace id is all zeros")]
    ZeroTraceId,
    /// The parent id is all zeros.
    #[error("the parent id is all zeros")]
    ZeroSpanId,
}

impl TraceParent {
    /// A new trace with a random trace id and span id, sampled (and saying that its id is
    /// random).
    pub fn new_root() -> Self {
        Self { trace_id: TraceId::random(), span_id: SpanId::random(), flags: FLAG_SAMPLED | FLAG_RANDOM }
    }

    /// The same trace, a new span.
    pub fn child(&self) -> Self {
        Self { trace_id: self.trace_id, span_id: SpanId::random(), flags: self.flags }
    }

    /// Parses a header value. A version above `00` is read as the specification asks: its
    /// first four fields as version `00` has them, and anything after must follow a `-`.
    pub fn parse(value: &[u8]) -> Result<Self, TraceParentError> {
        if value.len() < TRACEPARENT_LEN {
            return Err(TraceParentError::Shape);
        }
        if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
            return Err(TraceParentError::Shape);
        }
        let mut version = [0u8; 1];
        hex_decode(&value[0..2], &mut version)?;
        match version[0] {
            0xff => return Err(TraceParentError::ForbiddenVersion),
            0x00 if value.len() != TRACEPARENT_LEN => return Err(TraceParentError::Shape),
            _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => {
                return Err(TraceParentError::Shape);
            }
            _ => {}
        }
        let mut trace_id = [0u8; 16];
        hex_decode(&value[3..35], &mut trace_id)?;
        let mut span_id = [0u8; 8];
        hex_decode(&value[36..52], &mut span_id)?;
        let mut flags = [0u8; 1];
        hex_decode(&value[53..55], &mut flags)?;
        if trace_id == [0; 16] {
            return Err(TraceParentError::ZeroTraceId);
        }
        if span_id == [0; 8] {
            return Err(TraceParentError::ZeroSpanId);
        }
        Ok(Self { trace_id: TraceId(trace_id), span_id: SpanId(span_id), flags: flags[0] })
    }

    /// The value as version `00` writes it. Flags beyond [`FLAGS_KNOWN`] are sent as zero,
    /// as the specification asks.
    pub fn encode(&self) -> [u8; TRACEPARENT_LEN] {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[0] = b'0';
        out[1] = b'0';
        out[2] = b'-';
        hex_into(&self.trace_id.0, &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id.0, &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags & FLAGS_KNOWN], &mut out[53..55]);
        out
    }

    /// Whether the sampled flag is set.
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let out = self.encode();
        f.write_str(std::str::from_utf8(&out).expect("hex is ASCII"))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
}

fn hex_decode(text: &[u8], out: &mut [u8]) -> Result<(), TraceParentError> {
    fn digit(c: u8) -> Result<u8, TraceParentError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(TraceParentError::NotHex),
        }
    }
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(())
}
