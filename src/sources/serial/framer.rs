//! Splits a serial byte stream into lines. Pure and bounded: it never holds more than
//! `max_len` bytes, and after an over-long line it drops everything up to the next
//! delimiter, so one stuck sensor or line noise cannot grow memory or shift every later
//! line.

/// What ends a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// `\n`; a `\r` right before it is dropped too, because most sensors that claim `\n`
    /// send `\r\n` and a stray `\r` would spoil the last field.
    Lf,
    /// Exactly `\r\n`; a lone `\r` or `\n` stays inside the line.
    CrLf,
    /// Any other single byte (`\r`, `;`, ETX …).
    Byte(u8),
}

impl Delimiter {
    fn last_byte(self) -> u8 {
        match self {
            Delimiter::Lf | Delimiter::CrLf => b'\n',
            Delimiter::Byte(b) => b,
        }
    }
}

/// One thing the framer found in the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A complete line without its delimiter. May be empty.
    Line(&'a [u8]),
    /// A line longer than the limit ended here; `len` bytes before the delimiter's last
    /// byte were dropped.
    Overlong { len: usize },
}

/// Counters of what the framer dropped; the caller turns them into metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FramerStats {
    pub lines: u64,
    pub overlong: u64,
    pub partial: u64,
    pub dropped_bytes: u64,
}

#[derive(Debug)]
pub struct Framer {
    delim: Delimiter,
    max_len: usize,
    buf: Vec<u8>,
    /// Bytes of the current over-long line dropped so far; `Some` while resynchronising.
    discarding: Option<usize>,
    /// The previous byte was `\r` (only tracked while discarding in CrLf mode, where the
    /// buffer no longer holds it).
    prev_cr: bool,
    stats: FramerStats,
}

impl Framer {
    /// `max_len` is the longest line kept, without the delimiter (at least 1).
    pub fn new(delim: Delimiter, max_len: usize) -> Self {
        let max_len = max_len.max(1);
        Framer {
            delim,
            max_len,
            buf: Vec::with_capacity(max_len.min(4096) + 2),
            discarding: None,
            prev_cr: false,
            stats: FramerStats::default(),
        }
    }

    pub fn stats(&self) -> FramerStats {
        self.stats
    }

    /// Bytes held for an unfinished line.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds `data` and calls `on_frame` for each line or over-long event, in order.
    pub fn feed(&mut self, data: &[u8], mut on_frame: impl FnMut(Frame<'_>)) {
        let delim_byte = self.delim.last_byte();
        let mut rest = data;
        while !rest.is_empty() {
            match memchr(delim_byte, rest) {
                Some(i) => {
                    let (head, tail) = rest.split_at(i);
                    self.absorb(head);
                    rest = &tail[1..];
                    self.end_of_line(&mut on_frame);
                }
                None => {
                    self.absorb(rest);
                    rest = &[];
                }
            }
        }
    }

    /// Drops an unfinished line (the line went quiet mid-way). Returns whether one was
    /// dropped.
    pub fn flush_partial(&mut self) -> bool {
        let had = !self.buf.is_empty() || self.discarding.is_some();
        if had {
            self.stats.partial += 1;
            self.stats.dropped_bytes += (self.buf.len() + self.discarding.unwrap_or(0)) as u64;
        }
        self.buf.clear();
        self.discarding = None;
        self.prev_cr = false;
        had
    }

    /// Forgets everything (port reopened).
    pub fn reset(&mut self) {
        self.buf.clear();
        self.discarding = None;
        self.prev_cr = false;
    }

    /// Adds bytes that are not the delimiter's last byte to the current line.
    fn absorb(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(n) = self.discarding.as_mut() {
            *n += bytes.len();
            self.prev_cr = bytes.last() == Some(&b'\r');
            return;
        }
        let n = self.buf.len() + bytes.len();
        // One byte over is fine if it is a `\r` that may belong to the delimiter.
        let cr_room = matches!(self.delim, Delimiter::Lf | Delimiter::CrLf)
            && n == self.max_len + 1
            && bytes.last() == Some(&b'\r');
        if n > self.max_len && !cr_room {
            self.prev_cr = bytes.last() == Some(&b'\r');
            self.buf.clear();
            self.discarding = Some(n);
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }

    fn end_of_line(&mut self, on_frame: &mut impl FnMut(Frame<'_>)) {
        if let Some(n) = self.discarding.take() {
            // In CrLf mode a `\n` without `\r` does not end the line: keep discarding.
            if self.delim == Delimiter::CrLf && !self.prev_cr {
                self.discarding = Some(n + 1);
                self.prev_cr = false;
                return;
            }
            self.prev_cr = false;
            self.stats.overlong += 1;
            self.stats.dropped_bytes += n as u64;
            on_frame(Frame::Overlong { len: n });
            return;
        }
        match self.delim {
            Delimiter::CrLf => {
                if self.buf.last() != Some(&b'\r') {
                    // Lone `\n`: part of the line.
                    if self.buf.len() + 1 > self.max_len + 1 {
                        let n = self.buf.len() + 1;
                        self.buf.clear();
                        self.discarding = Some(n);
                    } else {
                        self.buf.push(b'\n');
                    }
                    return;
                }
                self.buf.pop();
            }
            Delimiter::Lf => {
                if self.buf.last() == Some(&b'\r') {
                    self.buf.pop();
                }
            }
            Delimiter::Byte(_) => {}
        }
        if self.buf.len() > self.max_len {
            let n = self.buf.len();
            self.buf.clear();
            self.stats.overlong += 1;
            self.stats.dropped_bytes += n as u64;
            on_frame(Frame::Overlong { len: n });
            return;
        }
        self.stats.lines += 1;
        on_frame(Frame::Line(&self.buf));
        self.buf.clear();
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(f: &mut Framer, data: &[u8]) -> Vec<Result<Vec<u8>, usize>> {
        let mut out = Vec::new();
        f.feed(data, |fr| match fr {
            Frame::Line(l) => out.push(Ok(l.to_vec())),
            Frame::Overlong { len } => out.push(Err(len)),
        });
        out
    }

    fn lines(v: &[&str]) -> Vec<Result<Vec<u8>, usize>> {
        v.iter().map(|s| Ok(s.as_bytes().to_vec())).collect()
    }

    #[test]
    fn lf_splits_and_strips_cr() {
        let mut f = Framer::new(Delimiter::Lf, 100);
        assert_eq!(run(&mut f, b"a,b\r\nc\n\nd"), lines(&["a,b", "c", ""]));
        assert_eq!(f.buffered(), 1);
        assert_eq!(run(&mut f, b"e\r"), lines(&[]));
        assert_eq!(run(&mut f, b"\n"), lines(&["de"]));
        assert_eq!(f.stats().lines, 4);
    }

    #[test]
    fn crlf_keeps_lone_lf_and_cr() {
        let mut f = Framer::new(Delimiter::CrLf, 100);
        assert_eq!(run(&mut f, b"a\nb\rc\r\nd\r"), lines(&["a\nb\rc"]));
        assert_eq!(run(&mut f, b"\nx\r\n"), lines(&["d", "x"]));
    }

    #[test]
    fn custom_byte() {
        let mut f = Framer::new(Delimiter::Byte(b';'), 100);
        assert_eq!(run(&mut f, b"t=1;h=2\n;"), lines(&["t=1", "h=2\n"]));
    }

    #[test]
    fn byte_at_a_time_equals_whole() {
        let data = b"$GPGGA,1*00\r\nfoo\r\n\r\nbar\n";
        let mut whole = Framer::new(Delimiter::Lf, 8);
        let a = run(&mut whole, data);
        let mut bytewise = Framer::new(Delimiter::Lf, 8);
        let mut b = Vec::new();
        for x in data {
            b.extend(run(&mut bytewise, &[*x]));
        }
        assert_eq!(a, b);
        assert_eq!(
            a,
            vec![
                Err(12),
                Ok(b"foo".to_vec()),
                Ok(vec![]),
                Ok(b"bar".to_vec())
            ]
        );
    }

    #[test]
    fn overlong_resyncs_on_next_delimiter() {
        let mut f = Framer::new(Delimiter::Lf, 4);
        assert_eq!(run(&mut f, b"abcd\nabcde"), lines(&["abcd"]));
        assert_eq!(f.buffered(), 0, "over-long bytes are not kept");
        assert_eq!(run(&mut f, b"fgh"), lines(&[]));
        assert_eq!(run(&mut f, b"ij\nok\n"), vec![Err(10), Ok(b"ok".to_vec())]);
        assert_eq!(f.stats().overlong, 1);
        assert_eq!(f.stats().dropped_bytes, 10);
    }

    #[test]
    fn max_len_excludes_crlf() {
        let mut f = Framer::new(Delimiter::CrLf, 3);
        assert_eq!(
            run(&mut f, b"abc\r\nabcd\r\nab\r\n"),
            vec![Ok(b"abc".to_vec()), Err(5), Ok(b"ab".to_vec())]
        );
        let mut f = Framer::new(Delimiter::Lf, 3);
        assert_eq!(
            run(&mut f, b"abc\r\nabcd\r\n"),
            vec![Ok(b"abc".to_vec()), Err(5)]
        );
    }

    #[test]
    fn crlf_overlong_needs_real_crlf_to_resync() {
        let mut f = Framer::new(Delimiter::CrLf, 2);
        assert_eq!(run(&mut f, b"abcdef\nxy\r"), lines(&[]));
        assert_eq!(run(&mut f, b"\nok\r\n"), vec![Err(10), Ok(b"ok".to_vec())]);
    }

    #[test]
    fn flush_partial_counts_and_clears() {
        let mut f = Framer::new(Delimiter::Lf, 10);
        run(&mut f, b"half");
        assert!(f.flush_partial());
        assert!(!f.flush_partial());
        assert_eq!(run(&mut f, b"line\n"), lines(&["line"]));
        assert_eq!(f.stats().partial, 1);
    }
}
