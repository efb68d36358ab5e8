//! Measures how fast the serial pipeline (framer → parser → typed readings) runs for each
//! line format, without I/O, and how much it buffers. Run:
//!
//!     cargo run --release --example serial_throughput
//!
//! A 115200-baud line carries at most ~11.5 kB/s, so anything above a few MB/s leaves the
//! CPU of a Raspberry Pi free for everything else.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use edgebus::sources::serial::engine::{Action, DeviceRt, Engine, PointRt};
use edgebus::sources::serial::framer::{Delimiter, Framer};
use edgebus::sources::serial::parse::csv::CsvOptions;
use edgebus::sources::serial::parse::json::JsonOptions;
use edgebus::sources::serial::parse::kv::KvOptions;
use edgebus::sources::serial::parse::nmea::NmeaOptions;
use edgebus::sources::serial::parse::regex::RegexOptions;
use edgebus::sources::serial::parse::{Parser, ParserSpec, ValueType};

fn nmea(body: &str) -> String {
    let cs = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{cs:02X}\r\n")
}

fn device(spec: ParserSpec, fields: &[&str]) -> DeviceRt {
    DeviceRt {
        name: "d".into(),
        parser: Parser::build(&spec, fields).expect("parser"),
        matcher: None,
        points: fields
            .iter()
            .map(|f| PointRt {
                name: (*f).into(),
                unit: None,
                ty: ValueType::Auto,
                scale: None,
                offset: None,
            })
            .collect(),
        poll: None,
        online: None,
    }
}

fn run(name: &str, dev: DeviceRt, lines: &[String]) {
    let mut stream = Vec::new();
    while stream.len() < 32 << 20 {
        for l in lines {
            stream.extend_from_slice(l.as_bytes());
        }
    }
    let mut e = Engine::new(
        "bench".into(),
        Framer::new(Delimiter::Lf, 1024),
        vec![dev],
        None,
        Arc::default(),
    );
    let now = Instant::now();
    e.opened(now);
    let mut out: Vec<Action> = Vec::with_capacity(4096);
    let mut readings = 0usize;
    let t0 = Instant::now();
    for chunk in stream.chunks(4096) {
        e.bytes(chunk, now, SystemTime::UNIX_EPOCH, &mut out);
        readings += out.len();
        out.clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    let s = e.stats();
    let nlines = edgebus::sources::serial::engine::SerialStats::get(&s.lines);
    println!(
        "{name:<6} {:>8.1} MB/s {:>10.0} lines/s {:>10.0} readings/s  (garbage {})",
        stream.len() as f64 / secs / 1e6,
        nlines as f64 / secs,
        readings as f64 / secs,
        s.garbage()
    );
}

fn main() {
    let gga = nmea("GPGGA,092725.00,4717.11399,N,00833.91590,E,1,08,1.01,499.6,M,48.0,M,,");
    let rmc = nmea("GPRMC,083559.00,A,4717.11437,N,00833.91522,E,0.004,77.52,091202,,,A");
    let gsv = nmea("GPGSV,3,1,11,10,63,137,17,07,61,098,15,05,59,290,20,08,54,157,30");
    run(
        "nmea",
        device(
            ParserSpec::Nmea(NmeaOptions::default()),
            &[
                "latitude",
                "longitude",
                "altitude",
                "satellites",
                "RMC.speed_kmh",
            ],
        ),
        &[gga, rmc, gsv],
    );
    run(
        "csv",
        device(
            ParserSpec::Csv(CsvOptions {
                columns: ["ts", "t", "h", "p", "w"].map(String::from).to_vec(),
                separator: ";".into(),
                allow_extra_columns: false,
            }),
            &["t", "h", "p", "w"],
        ),
        &["2026-11-22T10:00:00Z;21.5;40.1;1013.25;270\r\n".to_string()],
    );
    run(
        "json",
        device(
            ParserSpec::Json(JsonOptions {}),
            &["/bme280/t", "/bme280/p", "uptime"],
        ),
        &[
            "{\"bme280\":{\"t\":22.75,\"p\":1009.5},\"uptime\":12,\"io\":{\"relay\":true}}\n"
                .to_string(),
        ],
    );
    run(
        "kv",
        device(ParserSpec::Kv(KvOptions::default()), &["T", "H", "soil"]),
        &["T=24.0 H=61 soil=512 pump=0\r\n".to_string()],
    );
    run(
        "regex",
        device(
            ParserSpec::Regex(RegexOptions {
                pattern: r"PM2\.5:\s*(?P<pm25>\d+)\s*ug/m3\s+PM10:\s*(?P<pm10>\d+)".into(),
            }),
            &["pm25", "pm10"],
        ),
        &["PM2.5: 12 ug/m3 PM10: 20 ug/m3\r\n".to_string()],
    );
    // Garbage costs no more than lines: 32 MiB of random bytes with no delimiter.
    let mut f = Framer::new(Delimiter::Lf, 1024);
    let junk: Vec<u8> = (0..32u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8 | 1)
        .filter(|b| *b != b'\n')
        .collect();
    let t0 = Instant::now();
    for c in junk.chunks(4096) {
        f.feed(c, |_| {});
        assert!(f.buffered() <= 1025);
    }
    println!(
        "noise  {:>8.1} MB/s, buffer never above 1025 bytes (max_line 1024)",
        junk.len() as f64 / t0.elapsed().as_secs_f64() / 1e6
    );
}
