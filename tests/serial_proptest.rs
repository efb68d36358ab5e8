//! Properties of the pure serial parts: no byte stream panics the framer or a parser or
//! grows the buffer past its limit, and valid lines embedded in noise are all recovered,
//! whatever the chunking.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use edgebus::reading::Value;
use edgebus::sources::SourceEvent;
use edgebus::sources::serial::engine::{Action, DeviceRt, Engine, PointRt};
use edgebus::sources::serial::framer::{Delimiter, Frame, Framer};
use edgebus::sources::serial::parse::csv::CsvOptions;
use edgebus::sources::serial::parse::json::JsonOptions;
use edgebus::sources::serial::parse::kv::KvOptions;
use edgebus::sources::serial::parse::nmea::NmeaOptions;
use edgebus::sources::serial::parse::regex::RegexOptions;
use edgebus::sources::serial::parse::{Parser, ParserSpec, ValueType};
use proptest::prelude::*;

fn delimiter() -> impl Strategy<Value = Delimiter> {
    prop_oneof![
        Just(Delimiter::Lf),
        Just(Delimiter::CrLf),
        any::<u8>().prop_map(|b| if b == b'\n' {
            Delimiter::Lf
        } else {
            Delimiter::Byte(b)
        })
    ]
}

fn parsers() -> Vec<Parser> {
    let specs = [
        (
            ParserSpec::Nmea(NmeaOptions {
                require_checksum: false,
            }),
            vec!["latitude", "RMC.datetime", "satellites", "vdop"],
        ),
        (
            ParserSpec::Csv(CsvOptions {
                columns: vec!["a".into(), "b".into()],
                separator: ",".into(),
                allow_extra_columns: true,
            }),
            vec!["b"],
        ),
        (ParserSpec::Json(JsonOptions {}), vec!["/a/0", "b"]),
        (ParserSpec::Kv(KvOptions::default()), vec!["T", "H"]),
        (
            ParserSpec::Regex(RegexOptions {
                pattern: r"(?P<x>-?\d+(\.\d+)?)".into(),
            }),
            vec!["x"],
        ),
    ];
    specs
        .iter()
        .map(|(s, f)| Parser::build(s, f).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn framer_is_bounded_and_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..4096),
        cuts in proptest::collection::vec(1usize..300, 1..40),
        delim in delimiter(),
        max_len in 1usize..200,
    ) {
        let mut f = Framer::new(delim, max_len);
        let mut rest = &data[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            rest = tail;
            i += 1;
            f.feed(chunk, |fr| if let Frame::Line(l) = fr { assert!(l.len() <= max_len) });
            prop_assert!(f.buffered() <= max_len + 1);
        }
    }

    #[test]
    fn parsers_never_panic(line in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let lossy = String::from_utf8_lossy(&bytes);
        for p in parsers() {
            let _ = p.parse(&line);
            let _ = p.parse(&lossy);
        }
    }

    #[test]
    fn nmea_like_noise_never_panics(body in "[A-Z]{2}(GGA|RMC|GLL|VTG|GSA)(,[0-9.NSEWAV-]{0,12}){0,20}") {
        let cs = body.bytes().fold(0u8, |a, b| a ^ b);
        let line = format!("${body}*{cs:02X}");
        for p in parsers() {
            let _ = p.parse(&line);
        }
    }

    #[test]
    fn valid_lines_in_noise_are_all_recovered(
        items in proptest::collection::vec(
            prop_oneof![
                (0u32..90, 0u32..600_000, 0u32..100_000, 0u32..40).prop_map(|(d, m, alt, sats)| Item::Gga { d, m, alt, sats }),
                (-400i32..600, 0u32..100).prop_map(|(t, h)| Item::Kv { t, h }),
                proptest::collection::vec(any::<u8>(), 0..400).prop_map(Item::Noise),
            ],
            0..40,
        ),
        crlf in any::<bool>(),
        cuts in proptest::collection::vec(1usize..64, 1..20),
    ) {
        let delim = if crlf { Delimiter::CrLf } else { Delimiter::Lf };
        let mut stream = Vec::new();
        let mut want = Vec::new();
        for it in &items {
            match it {
                Item::Gga { d, m, alt, sats } => {
                    let lat = format!("{d:02}{:02}.{:04}", m / 10_000, m % 10_000);
                    let body = format!("GPGGA,101010.00,{lat},S,00833.91590,E,1,{sats:02},1.0,{}.{},M,48.0,M,,", alt / 10, alt % 10);
                    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
                    stream.extend(format!("${body}*{cs:02X}\r\n").bytes());
                    want.push(-(f64::from(*d) + f64::from(*m) / 10_000.0 / 60.0));
                    want.push(f64::from(*alt) / 10.0);
                    want.push(f64::from(*sats));
                }
                Item::Kv { t, h } => {
                    // Arduino style, with `\r\n` line ends and a tab for variety.
                    let sign = if *t < 0 { "-" } else { "" };
                    stream.extend(format!("kv:1 T={sign}{}.{}\tH={h}\r\n", t.abs() / 10, t.abs() % 10).bytes());
                    want.push(f64::from(*t) / 10.0);
                    want.push(f64::from(*h));
                }
                Item::Noise(n) => {
                    // Noise is anything up to a line end (a line end inside would make
                    // its tail a line of its own: that is the next item's business).
                    stream.extend(n.iter().copied().filter(|&b| b != b'\n'));
                    stream.extend(b"\r\n");
                }
            }
        }
        let dev = DeviceRt {
            name: "gps".into(),
            parser: Parser::build(&ParserSpec::Nmea(NmeaOptions::default()), &["latitude", "altitude", "satellites"]).unwrap(),
            matcher: None,
            points: ["lat", "alt", "sats"].iter().map(|n| PointRt { name: (*n).into(), unit: None, ty: ValueType::Float, scale: None, offset: None }).collect(),
            poll: None,
            online: None,
        };
        let kv = DeviceRt {
            name: "kv".into(),
            parser: Parser::build(&ParserSpec::Kv(KvOptions::default()), &["T", "H"]).unwrap(),
            matcher: Some(regex_lite::Regex::new("^kv:1 ").unwrap()),
            points: ["t", "h"].iter().map(|n| PointRt { name: (*n).into(), unit: None, ty: ValueType::Float, scale: None, offset: None }).collect(),
            poll: None,
            online: None,
        };
        let mut e = Engine::new("b".into(), Framer::new(delim, 128), vec![dev, kv], None, Arc::default());
        let now = Instant::now();
        e.opened(now);
        let mut out = Vec::new();
        let mut rest = &stream[..];
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts[i % cuts.len()].min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            e.bytes(chunk, now, SystemTime::UNIX_EPOCH, &mut out);
            rest = tail;
            i += 1;
        }
        let got: Vec<f64> = out.iter().filter_map(|a| match a {
            Action::Event(SourceEvent::Reading(r)) => match r.value { Value::Float(f) => Some(f), _ => None },
            _ => None,
        }).collect();
        prop_assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(&want) {
            prop_assert!((g - w).abs() < 1e-9, "{} != {}", g, w);
        }
    }
}

#[derive(Debug, Clone)]
enum Item {
    Gga { d: u32, m: u32, alt: u32, sats: u32 },
    Kv { t: i32, h: u32 },
    Noise(Vec<u8>),
}
