//! NMEA 0183 sentences from GPS/GNSS receivers: GGA, RMC, GLL, VTG and GSA from any
//! talker (GP, GN, GL, GA, BD …). Positions become signed decimal degrees; fields a
//! receiver leaves empty (no fix yet) produce no reading rather than a zero.
//!
//! A point's `field` is a name such as `latitude`, taken from whichever sentence carries
//! it, or `RMC.latitude` to take it from one sentence type only.

use serde::Deserialize;

use super::{BuildError, Outcome, ParseError, Raw, ValueType, options_error};

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmeaOptions {
    /// Reject sentences without a `*hh` checksum (a wrong checksum is always rejected).
    #[serde(default = "yes")]
    pub require_checksum: bool,
}

fn yes() -> bool {
    true
}

impl Default for NmeaOptions {
    fn default() -> Self {
        NmeaOptions {
            require_checksum: true,
        }
    }
}

/// Sentence types understood, and the fields each provides.
const SENTENCES: &[(&str, &[&str])] = &[
    (
        "GGA",
        &[
            "time",
            "latitude",
            "longitude",
            "fix_quality",
            "satellites",
            "hdop",
            "altitude",
            "geoid_separation",
            "dgps_age",
        ],
    ),
    (
        "RMC",
        &[
            "time",
            "valid",
            "latitude",
            "longitude",
            "speed_knots",
            "speed_kmh",
            "speed_ms",
            "course",
            "date",
            "datetime",
            "timestamp",
            "magnetic_variation",
        ],
    ),
    ("GLL", &["latitude", "longitude", "time", "valid"]),
    (
        "VTG",
        &[
            "course",
            "course_magnetic",
            "speed_knots",
            "speed_kmh",
            "speed_ms",
        ],
    ),
    ("GSA", &["fix_mode", "pdop", "hdop", "vdop"]),
];

const KNOT_KMH: f64 = 1.852;

#[derive(Debug, Clone)]
struct Want {
    sentence: Option<&'static str>,
    field: &'static str,
}

#[derive(Debug, Clone)]
pub struct Nmea {
    require_checksum: bool,
    wants: Vec<Want>,
}

impl Nmea {
    pub fn build(o: &NmeaOptions, fields: &[&str]) -> Result<Nmea, BuildError> {
        let mut wants = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let (sentence, name) = match f.split_once('.') {
                Some((s, n)) => {
                    let s = s.to_ascii_uppercase();
                    let Some((st, _)) = SENTENCES.iter().find(|(st, _)| *st == s) else {
                        return Err((
                            i,
                            format!("unknown NMEA sentence `{s}` (known: GGA, RMC, GLL, VTG, GSA)"),
                        ));
                    };
                    (Some(*st), n)
                }
                None => (None, *f),
            };
            let field = SENTENCES
                .iter()
                .filter(|(st, _)| sentence.is_none_or(|s| s == *st))
                .flat_map(|(_, fs)| fs.iter())
                .find(|x| **x == name)
                .copied()
                .ok_or_else(|| {
                    let known: Vec<&str> = match sentence {
                        Some(s) => SENTENCES
                            .iter()
                            .find(|(st, _)| *st == s)
                            .map(|(_, fs)| fs.to_vec())
                            .unwrap_or_default(),
                        None => {
                            let mut v: Vec<&str> = SENTENCES
                                .iter()
                                .flat_map(|(_, fs)| fs.iter().copied())
                                .collect();
                            v.sort_unstable();
                            v.dedup();
                            v
                        }
                    };
                    (
                        i,
                        format!("unknown NMEA field `{f}` (known: {})", known.join(", ")),
                    )
                })?;
            wants.push(Want { sentence, field });
        }
        if fields.is_empty() {
            return Err(options_error("an NMEA device needs at least one point"));
        }
        Ok(Nmea {
            require_checksum: o.require_checksum,
            wants,
        })
    }

    pub fn natural_type(&self, i: usize) -> ValueType {
        match self.wants.get(i).map(|w| w.field) {
            Some("fix_quality" | "satellites" | "fix_mode") => ValueType::Uint,
            Some("valid") => ValueType::Bool,
            Some("time" | "date" | "datetime") => ValueType::Text,
            _ => ValueType::Float,
        }
    }

    pub fn natural_unit(&self, i: usize) -> Option<&'static str> {
        match self.wants.get(i)?.field {
            "latitude" | "longitude" | "course" | "course_magnetic" | "magnetic_variation" => {
                Some("°")
            }
            "altitude" | "geoid_separation" => Some("m"),
            "speed_knots" => Some("kn"),
            "speed_kmh" => Some("km/h"),
            "speed_ms" => Some("m/s"),
            "timestamp" | "dgps_age" => Some("s"),
            _ => None,
        }
    }

    pub fn parse(&self, line: &str) -> Result<Outcome, ParseError> {
        let body = frame(line, self.require_checksum)?;
        let mut parts = body.split(',');
        let address = parts.next().unwrap_or("");
        if address.len() != 5
            || !address.bytes().all(|b| b.is_ascii_alphanumeric())
            || address.starts_with('P')
        {
            // Proprietary ($PUBX …) and unusual addresses are valid NMEA we do not read.
            return Ok(Outcome::Ignored);
        }
        let kind = &address[2..];
        let f: Vec<&str> = parts.collect();
        let found = match kind {
            "GGA" => gga(&f)?,
            "RMC" => rmc(&f)?,
            "GLL" => gll(&f)?,
            "VTG" => vtg(&f)?,
            "GSA" => gsa(&f)?,
            _ => return Ok(Outcome::Ignored),
        };
        let values: Vec<Option<Raw>> = self
            .wants
            .iter()
            .map(|w| {
                if w.sentence.is_some_and(|s| s != kind) {
                    return None;
                }
                found
                    .iter()
                    .find(|(n, _)| *n == w.field)
                    .map(|(_, v)| v.clone())
            })
            .collect();
        if values.iter().all(Option::is_none) {
            return Ok(Outcome::Ignored);
        }
        Ok(Outcome::Fields(values))
    }
}

/// Strips `$`/`!`, verifies and strips `*hh`. Junk before the last `$` (line noise glued
/// to the sentence) is skipped: the checksum still protects what follows.
fn frame(line: &str, require_checksum: bool) -> Result<&str, ParseError> {
    let line = line.trim_end();
    let start = line
        .rfind(['$', '!'])
        .ok_or_else(|| ParseError::Malformed("no `$` sentence start".into()))?;
    let s = &line[start + 1..];
    match s.rfind('*') {
        Some(star) => {
            let (body, cs) = (&s[..star], &s[star + 1..]);
            let expected = (cs.len() == 2)
                .then(|| u8::from_str_radix(cs, 16).ok())
                .flatten()
                .ok_or_else(|| ParseError::Malformed(format!("bad checksum field {cs:?}")))?;
            let computed = body.bytes().fold(0u8, |a, b| a ^ b);
            if computed != expected {
                return Err(ParseError::Checksum { expected, computed });
            }
            Ok(body)
        }
        None if require_checksum => Err(ParseError::Malformed("no `*hh` checksum".into())),
        None => Ok(s),
    }
}

type Found = Vec<(&'static str, Raw)>;

fn field<'a>(f: &[&'a str], i: usize) -> &'a str {
    f.get(i).copied().unwrap_or("")
}

fn malformed(what: &str, v: &str) -> ParseError {
    ParseError::Malformed(format!("bad {what} {v:?}"))
}

fn opt_f64(f: &[&str], i: usize, what: &str) -> Result<Option<f64>, ParseError> {
    let v = field(f, i);
    if v.is_empty() {
        return Ok(None);
    }
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(Some(x)),
        _ => Err(malformed(what, v)),
    }
}

fn opt_u64(f: &[&str], i: usize, what: &str) -> Result<Option<u64>, ParseError> {
    let v = field(f, i);
    if v.is_empty() {
        return Ok(None);
    }
    v.parse::<u64>().map(Some).map_err(|_| malformed(what, v))
}

fn push_f(out: &mut Found, name: &'static str, v: Option<f64>) {
    if let Some(x) = v {
        out.push((name, Raw::Float(x)));
    }
}

/// `ddmm.mmmm` + hemisphere → signed decimal degrees.
fn coord(v: &str, hemi: &str, max_deg: f64, what: &str) -> Result<Option<f64>, ParseError> {
    if v.is_empty() && hemi.is_empty() {
        return Ok(None);
    }
    let int_len = v.find('.').unwrap_or(v.len());
    if int_len < 3 || !v.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(malformed(what, v));
    }
    let deg: f64 = v[..int_len - 2].parse().map_err(|_| malformed(what, v))?;
    let min: f64 = v[int_len - 2..].parse().map_err(|_| malformed(what, v))?;
    let x = deg + min / 60.0;
    if min >= 60.0 || x > max_deg {
        return Err(malformed(what, v));
    }
    match (hemi, what) {
        ("N", "latitude") | ("E", "longitude") => Ok(Some(x)),
        ("S", "latitude") | ("W", "longitude") => Ok(Some(-x)),
        _ => Err(malformed("hemisphere", hemi)),
    }
}

fn position(out: &mut Found, f: &[&str], i: usize) -> Result<(), ParseError> {
    push_f(
        out,
        "latitude",
        coord(field(f, i), field(f, i + 1), 90.0, "latitude")?,
    );
    push_f(
        out,
        "longitude",
        coord(field(f, i + 2), field(f, i + 3), 180.0, "longitude")?,
    );
    Ok(())
}

/// `hhmmss[.ss]` → (`hh:mm:ss[.ss]`, seconds of day).
fn time(v: &str) -> Result<Option<(String, f64)>, ParseError> {
    if v.is_empty() {
        return Ok(None);
    }
    let b = v.as_bytes();
    if b.len() < 6 || !b[..6].iter().all(u8::is_ascii_digit) {
        return Err(malformed("time", v));
    }
    let num = |s: &str| s.parse::<u32>().map_err(|_| malformed("time", v));
    let (h, m) = (num(&v[0..2])?, num(&v[2..4])?);
    let frac = &v[6..];
    let s: f64 = v[4..].parse().map_err(|_| malformed("time", v))?;
    if h > 23 || m > 59 || s >= 61.0 || !(frac.is_empty() || frac.starts_with('.')) {
        return Err(malformed("time", v));
    }
    let text = format!("{}:{}:{}", &v[0..2], &v[2..4], &v[4..]);
    Ok(Some((
        text,
        f64::from(h) * 3600.0 + f64::from(m) * 60.0 + s,
    )))
}

fn push_time(out: &mut Found, v: &str) -> Result<Option<(String, f64)>, ParseError> {
    let t = time(v)?;
    if let Some((text, _)) = &t {
        out.push(("time", Raw::Text(text.clone())));
    }
    Ok(t)
}

fn speeds(out: &mut Found, knots: Option<f64>) {
    if let Some(k) = knots {
        out.push(("speed_knots", Raw::Float(k)));
        out.push(("speed_kmh", Raw::Float(k * KNOT_KMH)));
        out.push(("speed_ms", Raw::Float(k * KNOT_KMH / 3.6)));
    }
}

fn need(f: &[&str], n: usize, kind: &str) -> Result<(), ParseError> {
    if f.len() < n {
        return Err(ParseError::Malformed(format!(
            "{kind} has {} fields, expected at least {n}",
            f.len()
        )));
    }
    Ok(())
}

fn gga(f: &[&str]) -> Result<Found, ParseError> {
    need(f, 14, "GGA")?;
    let mut out = Found::new();
    push_time(&mut out, field(f, 0))?;
    let quality = opt_u64(f, 5, "fix quality")?;
    if let Some(q) = quality {
        out.push(("fix_quality", Raw::UInt(q)));
    }
    if let Some(n) = opt_u64(f, 6, "satellite count")? {
        out.push(("satellites", Raw::UInt(n)));
    }
    push_f(&mut out, "hdop", opt_f64(f, 7, "HDOP")?);
    if quality.unwrap_or(0) > 0 {
        position(&mut out, f, 1)?;
        push_f(&mut out, "altitude", opt_f64(f, 8, "altitude")?);
        push_f(
            &mut out,
            "geoid_separation",
            opt_f64(f, 10, "geoid separation")?,
        );
        push_f(&mut out, "dgps_age", opt_f64(f, 12, "DGPS age")?);
    }
    Ok(out)
}

fn rmc(f: &[&str]) -> Result<Found, ParseError> {
    need(f, 11, "RMC")?;
    let mut out = Found::new();
    let t = push_time(&mut out, field(f, 0))?;
    let valid = match field(f, 1) {
        "A" => true,
        "V" => false,
        other => return Err(malformed("status", other)),
    };
    out.push(("valid", Raw::Bool(valid)));
    let date = date(field(f, 8))?;
    if let Some((text, days)) = &date {
        out.push(("date", Raw::Text(text.clone())));
        if let Some((tt, secs)) = &t {
            out.push(("datetime", Raw::Text(format!("{text}T{tt}Z"))));
            out.push(("timestamp", Raw::Float(*days as f64 * 86400.0 + secs)));
        }
    }
    if valid {
        position(&mut out, f, 2)?;
        speeds(&mut out, opt_f64(f, 6, "speed")?);
        push_f(&mut out, "course", opt_f64(f, 7, "course")?);
        if let Some(mv) = opt_f64(f, 9, "magnetic variation")? {
            let sign = if field(f, 10) == "W" { -1.0 } else { 1.0 };
            out.push(("magnetic_variation", Raw::Float(sign * mv)));
        }
    }
    Ok(out)
}

fn gll(f: &[&str]) -> Result<Found, ParseError> {
    need(f, 6, "GLL")?;
    let mut out = Found::new();
    push_time(&mut out, field(f, 4))?;
    let valid = field(f, 5) == "A";
    out.push(("valid", Raw::Bool(valid)));
    if valid {
        position(&mut out, f, 0)?;
    }
    Ok(out)
}

fn vtg(f: &[&str]) -> Result<Found, ParseError> {
    need(f, 8, "VTG")?;
    let mut out = Found::new();
    push_f(&mut out, "course", opt_f64(f, 0, "course")?);
    push_f(
        &mut out,
        "course_magnetic",
        opt_f64(f, 2, "magnetic course")?,
    );
    speeds(&mut out, opt_f64(f, 4, "speed")?);
    Ok(out)
}

fn gsa(f: &[&str]) -> Result<Found, ParseError> {
    need(f, 17, "GSA")?;
    let mut out = Found::new();
    if let Some(m) = opt_u64(f, 1, "fix mode")? {
        out.push(("fix_mode", Raw::UInt(m)));
    }
    push_f(&mut out, "pdop", opt_f64(f, 14, "PDOP")?);
    push_f(&mut out, "hdop", opt_f64(f, 15, "HDOP")?);
    // NMEA 4.1 adds a system id after VDOP; VDOP stays at index 16.
    push_f(&mut out, "vdop", opt_f64(f, 16, "VDOP")?);
    Ok(out)
}

/// `ddmmyy` → (`yyyy-mm-dd`, days since 1970-01-01). Two-digit years are 1980–2079,
/// the window GPS receivers use.
fn date(v: &str) -> Result<Option<(String, i64)>, ParseError> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() != 6 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed("date", v));
    }
    let n = |r: std::ops::Range<usize>| v[r].parse::<i64>().unwrap_or(0);
    let (d, m, yy) = (n(0..2), n(2..4), n(4..6));
    let y = if yy < 80 { 2000 + yy } else { 1900 + yy };
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(malformed("date", v));
    }
    Ok(Some((
        format!("{y:04}-{m:02}-{d:02}"),
        days_from_civil(y, m, d),
    )))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Adds a correct checksum.
    pub fn sentence(body: &str) -> String {
        let cs = body.bytes().fold(0u8, |a, b| a ^ b);
        format!("${body}*{cs:02X}")
    }

    fn nmea(fields: &[&str]) -> Nmea {
        Nmea::build(&NmeaOptions::default(), fields).unwrap()
    }

    fn f(x: &Option<Raw>) -> f64 {
        match x {
            Some(Raw::Float(v)) => *v,
            other => panic!("not a float: {other:?}"),
        }
    }

    fn fields(o: Outcome) -> Vec<Option<Raw>> {
        match o {
            Outcome::Fields(v) => v,
            Outcome::Ignored => panic!("ignored"),
        }
    }

    #[test]
    fn gga_reference_sentence() {
        // The classic example from the NMEA documentation (checksum 47).
        let line = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
        let p = nmea(&[
            "latitude",
            "longitude",
            "altitude",
            "fix_quality",
            "satellites",
            "hdop",
            "time",
            "speed_kmh",
        ]);
        let v = fields(p.parse(line).unwrap());
        assert!((f(&v[0]) - 48.1173).abs() < 1e-9);
        assert!((f(&v[1]) - 11.516_666_666_666_667).abs() < 1e-9);
        assert_eq!(f(&v[2]), 545.4);
        assert_eq!(v[3], Some(Raw::UInt(1)));
        assert_eq!(v[4], Some(Raw::UInt(8)));
        assert_eq!(f(&v[5]), 0.9);
        assert_eq!(v[6], Some(Raw::Text("12:35:19".into())));
        assert_eq!(v[7], None, "GGA has no speed");
    }

    #[test]
    fn rmc_reference_sentence() {
        let line = "$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6A";
        let p = nmea(&[
            "RMC.latitude",
            "speed_knots",
            "speed_kmh",
            "course",
            "date",
            "datetime",
            "timestamp",
            "magnetic_variation",
            "valid",
        ]);
        let v = fields(p.parse(line).unwrap());
        assert!((f(&v[0]) - 48.1173).abs() < 1e-9);
        assert_eq!(f(&v[1]), 22.4);
        assert!((f(&v[2]) - 41.4848).abs() < 1e-9);
        assert_eq!(f(&v[3]), 84.4);
        assert_eq!(v[4], Some(Raw::Text("1994-03-23".into())));
        assert_eq!(v[5], Some(Raw::Text("1994-03-23T12:35:19Z".into())));
        assert_eq!(f(&v[6]), 764_426_119.0);
        assert_eq!(f(&v[7]), -3.1);
        assert_eq!(v[8], Some(Raw::Bool(true)));
    }

    #[test]
    fn southern_western_and_fractional_time() {
        let line = sentence("GNRMC,235959.50,A,3352.1280,S,15112.5700,W,0.0,,311224,,,A");
        let p = nmea(&["latitude", "longitude", "time", "datetime", "course"]);
        let v = fields(p.parse(&line).unwrap());
        assert!((f(&v[0]) + 33.868_8).abs() < 1e-9);
        assert!((f(&v[1]) + 151.2095).abs() < 1e-9);
        assert_eq!(v[2], Some(Raw::Text("23:59:59.50".into())));
        assert_eq!(v[3], Some(Raw::Text("2024-12-31T23:59:59.50Z".into())));
        assert_eq!(v[4], None, "empty course gives no reading");
    }

    #[test]
    fn no_fix_gives_no_position() {
        let p = nmea(&["latitude", "fix_quality", "satellites", "valid"]);
        let v = fields(
            p.parse(&sentence("GPGGA,000001.00,,,,,0,00,99.99,,,,,,"))
                .unwrap(),
        );
        assert_eq!(v, vec![None, Some(Raw::UInt(0)), Some(Raw::UInt(0)), None]);
        let v = fields(
            p.parse(&sentence("GPRMC,000001.00,V,,,,,,,221126,,,N"))
                .unwrap(),
        );
        assert_eq!(v, vec![None, None, None, Some(Raw::Bool(false))]);
    }

    #[test]
    fn sentence_qualifier_filters() {
        let p = nmea(&["GGA.latitude", "RMC.latitude"]);
        let gga = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
        let v = fields(p.parse(gga).unwrap());
        assert!(v[0].is_some() && v[1].is_none());
    }

    #[test]
    fn vtg_gsa_gll() {
        let p = nmea(&[
            "course",
            "speed_kmh",
            "fix_mode",
            "pdop",
            "vdop",
            "latitude",
        ]);
        let v = fields(
            p.parse(&sentence("GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A"))
                .unwrap(),
        );
        assert_eq!(f(&v[0]), 54.7);
        assert!((f(&v[1]) - 10.186).abs() < 1e-9);
        let v = fields(
            p.parse(&sentence(
                "GNGSA,A,3,80,71,73,79,69,,,,,,,,1.83,1.09,1.47,1",
            ))
            .unwrap(),
        );
        assert_eq!(v[2], Some(Raw::UInt(3)));
        assert_eq!((f(&v[3]), f(&v[4])), (1.83, 1.47));
        let v = fields(
            p.parse(&sentence("GPGLL,4916.45,N,12311.12,W,225444,A,A"))
                .unwrap(),
        );
        assert!((f(&v[5]) - 49.274_166_666_666_67).abs() < 1e-9);
    }

    #[test]
    fn checksum_and_framing_errors() {
        let p = nmea(&["latitude"]);
        let bad = "$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*48";
        assert_eq!(
            p.parse(bad),
            Err(ParseError::Checksum {
                expected: 0x48,
                computed: 0x47
            })
        );
        assert!(matches!(
            p.parse("GPGGA,1,2"),
            Err(ParseError::Malformed(_))
        ));
        assert!(
            matches!(
                p.parse("$GPGGA,123519,4807.038,N"),
                Err(ParseError::Malformed(_))
            ),
            "no checksum"
        );
        assert!(matches!(p.parse("$GPGGA*4"), Err(ParseError::Malformed(_))));
        assert!(matches!(
            p.parse(&sentence("GPGGA,1")),
            Err(ParseError::Malformed(_))
        ));
        assert!(matches!(
            p.parse(&sentence(
                "GPGGA,123519,48x7.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
            )),
            Err(ParseError::Malformed(_))
        ));
        assert!(
            matches!(
                p.parse(&sentence(
                    "GPGGA,123519,4867.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
                )),
                Err(ParseError::Malformed(_))
            ),
            "60+ minutes"
        );
        assert!(
            matches!(
                p.parse(&sentence(
                    "GPRMC,123519,A,4807.038,N,01131.000,E,1,2,320394,,"
                )),
                Err(ParseError::Malformed(_))
            ),
            "bad date"
        );
        let lax = Nmea::build(
            &NmeaOptions {
                require_checksum: false,
            },
            &["latitude"],
        )
        .unwrap();
        assert!(lax.parse("$GPGLL,4916.45,N,12311.12,W,225444,A").is_ok());
    }

    #[test]
    fn noise_before_sentence_is_skipped() {
        let p = nmea(&["latitude"]);
        let line = format!(
            "\u{1}x$G{}",
            sentence("GPGLL,4916.45,N,12311.12,W,225444,A,A")
        );
        assert!(matches!(p.parse(&line), Ok(Outcome::Fields(_))));
    }

    #[test]
    fn other_sentences_are_ignored() {
        let p = nmea(&["latitude"]);
        assert_eq!(
            p.parse(&sentence(
                "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00"
            )),
            Ok(Outcome::Ignored)
        );
        assert_eq!(p.parse(&sentence("PUBX,00,1")), Ok(Outcome::Ignored));
        // A GSA when only latitude is wanted carries nothing for us.
        assert_eq!(
            p.parse(&sentence("GNGSA,A,3,80,71,,,,,,,,,,,1.83,1.09,1.47")),
            Ok(Outcome::Ignored)
        );
    }

    #[test]
    fn build_rejects_unknown_fields() {
        assert_eq!(
            Nmea::build(&NmeaOptions::default(), &["latitude", "altitud"])
                .unwrap_err()
                .0,
            1
        );
        assert_eq!(
            Nmea::build(&NmeaOptions::default(), &["GGA.speed_kmh"])
                .unwrap_err()
                .0,
            0
        );
        assert_eq!(
            Nmea::build(&NmeaOptions::default(), &["XYZ.latitude"])
                .unwrap_err()
                .0,
            0
        );
        let p = nmea(&["satellites", "valid", "datetime", "altitude"]);
        assert_eq!(
            (0..4).map(|i| p.natural_type(i)).collect::<Vec<_>>(),
            vec![
                ValueType::Uint,
                ValueType::Bool,
                ValueType::Text,
                ValueType::Float
            ]
        );
    }

    #[test]
    fn epoch_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
    }
}
