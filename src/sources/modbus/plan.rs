//! Request planning: which reads cover a device's points with the fewest requests.
//!
//! Pure: the bus task asks for a plan once at start (and a finer one for a request that
//! failed with an illegal-address exception), never on the hot path.

use serde::Deserialize;

/// A Modbus data table, which fixes the read function code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// FC 1 (read), FC 5/15 (write).
    Coil,
    /// FC 2.
    #[serde(alias = "discrete")]
    DiscreteInput,
    /// FC 3 (read), FC 6/16 (write).
    Holding,
    /// FC 4.
    Input,
}

impl Table {
    pub fn is_bits(self) -> bool {
        matches!(self, Table::Coil | Table::DiscreteInput)
    }
    /// The name used in the device map.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coil => "coil",
            Table::DiscreteInput => "discrete_input",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    pub fn function_code(self) -> u8 {
        match self {
            Table::Coil => 1,
            Table::DiscreteInput => 2,
            Table::Holding => 3,
            Table::Input => 4,
        }
    }
}

/// Protocol maximum of registers per read (FC 3/4).
pub const MAX_REGISTERS: u16 = 125;
/// Protocol maximum of bits per read (FC 1/2).
pub const MAX_BITS: u16 = 2000;

/// Where one point lives: `count` registers (or bits) from `address`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub table: Table,
    pub address: u16,
    pub count: u16,
}

impl Span {
    fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.count.max(1))
    }
}

/// Limits of one device. Some devices accept less than the protocol maximum, and reading
/// across unmapped gaps is allowed by some devices and refused by others: both are tunable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_registers: u16,
    pub max_bits: u16,
    /// Largest run of unused registers a merged read may span.
    pub max_gap: u16,
    /// Largest run of unused bits a merged read may span.
    pub max_bit_gap: u16,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_registers: MAX_REGISTERS,
            max_bits: MAX_BITS,
            max_gap: 10,
            max_bit_gap: 160,
        }
    }
}

/// One read request and the points (indices into the span list) it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
    pub points: Vec<usize>,
}

/// Merges the spans into the fewest requests per table, each within the limits.
///
/// Greedy over spans sorted by address: a span joins the open request when the request
/// stays within the size limit and the hole before the span is at most the gap limit.
/// For intervals sorted by start this greedy choice is optimal (exchange argument: any
/// other plan's first request ends no later than ours). Requests come out ordered by
/// table, then address, so a cycle sweeps the device's map once.
pub fn plan(spans: &[Span], limits: &Limits) -> Vec<ReadRequest> {
    let mut order: Vec<usize> = (0..spans.len()).collect();
    order.sort_by_key(|&i| (spans[i].table, spans[i].address, spans[i].count));
    let mut out: Vec<ReadRequest> = Vec::new();
    let mut open: Option<(Table, u32, u32, Vec<usize>)> = None; // table, start, end, points
    for i in order {
        let s = spans[i];
        let (max, gap) = if s.table.is_bits() {
            (
                u32::from(limits.max_bits.max(1)),
                u32::from(limits.max_bit_gap),
            )
        } else {
            (
                u32::from(limits.max_registers.max(1)),
                u32::from(limits.max_gap),
            )
        };
        if let Some((table, start, end, points)) = open.as_mut() {
            let new_end = (*end).max(s.end());
            let hole = u32::from(s.address).saturating_sub(*end);
            if *table == s.table && hole <= gap && new_end - *start <= max {
                *end = new_end;
                points.push(i);
                continue;
            }
        }
        if let Some(done) = open.take() {
            out.push(close(done));
        }
        open = Some((s.table, u32::from(s.address), s.end(), vec![i]));
    }
    if let Some(done) = open {
        out.push(close(done));
    }
    out
}

fn close((table, start, end, points): (Table, u32, u32, Vec<usize>)) -> ReadRequest {
    // start < 65536 and end - start <= 2000 by construction; saturate rather than trust.
    ReadRequest {
        table,
        start: u16::try_from(start).unwrap_or(u16::MAX),
        count: u16::try_from(end - start).unwrap_or(u16::MAX),
        points,
    }
}

/// The fallback after an illegal-address exception. A read that spans holes is first cut
/// at the holes (devices that refuse unmapped registers still accept each contiguous run);
/// a read without holes is cut into one request per point (points with the same span share
/// one), so a single unmapped address only blinds its own point. The bus task applies this
/// again to a part that fails, so it settles within two steps.
pub fn split(req: &ReadRequest, spans: &[Span]) -> Vec<ReadRequest> {
    let sub: Vec<Span> = req.points.iter().map(|&i| spans[i]).collect();
    let tight = Limits {
        max_registers: req.count,
        max_bits: req.count,
        max_gap: 0,
        max_bit_gap: 0,
    };
    let runs = plan(&sub, &tight);
    if runs.len() > 1 {
        return runs
            .into_iter()
            .map(|mut r| {
                r.points = r.points.iter().map(|&j| req.points[j]).collect();
                r
            })
            .collect();
    }
    let mut out: Vec<ReadRequest> = Vec::new();
    let mut points = req.points.clone();
    points.sort_by_key(|&i| (spans[i].address, spans[i].count));
    for i in points {
        let s = spans[i];
        match out.last_mut() {
            Some(last) if last.start == s.address && last.count == s.count => last.points.push(i),
            _ => out.push(ReadRequest {
                table: s.table,
                start: s.address,
                count: s.count,
                points: vec![i],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sp(table: Table, address: u16, count: u16) -> Span {
        Span {
            table,
            address,
            count,
        }
    }

    #[test]
    fn merges_contiguous_and_small_gaps() {
        // SDM-style map: f32 every 6 registers (gap 4).
        let spans: Vec<Span> = (0..10).map(|i| sp(Table::Input, i * 6, 2)).collect();
        let p = plan(&spans, &Limits::default());
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].start, p[0].count), (0, 56));
        assert_eq!(p[0].points, (0..10).collect::<Vec<_>>());
        let tight = Limits {
            max_gap: 3,
            ..Limits::default()
        };
        assert_eq!(plan(&spans, &tight).len(), 10);
    }

    #[test]
    fn respects_size_limits_and_tables() {
        let spans: Vec<Span> = (0..200).map(|i| sp(Table::Holding, i * 2, 2)).collect();
        let p = plan(&spans, &Limits::default());
        // 400 registers: 124 + 124 + 124 + 28 (f32 pairs cannot split across requests).
        assert_eq!(
            p.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![124, 124, 124, 28]
        );
        assert!(p.iter().all(|r| r.count <= MAX_REGISTERS));
        let coils: Vec<Span> = (0..4500).map(|i| sp(Table::Coil, i, 1)).collect();
        let p = plan(&coils, &Limits::default());
        assert_eq!(
            p.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![2000, 2000, 500]
        );
        let mixed = [
            sp(Table::Input, 0, 1),
            sp(Table::Holding, 1, 1),
            sp(Table::Input, 1, 1),
        ];
        let p = plan(&mixed, &Limits::default());
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].table, Table::Holding);
        assert_eq!(p[1].points, vec![0, 2]);
    }

    #[test]
    fn overlapping_points_share_registers() {
        // A u32 and a bit of its low word and a u16 view of its high word.
        let spans = [
            sp(Table::Holding, 10, 2),
            sp(Table::Holding, 11, 1),
            sp(Table::Holding, 10, 1),
        ];
        let p = plan(&spans, &Limits::default());
        assert_eq!(
            p,
            vec![ReadRequest {
                table: Table::Holding,
                start: 10,
                count: 2,
                points: vec![2, 0, 1]
            }]
        );
    }

    #[test]
    fn top_of_address_space() {
        let spans = [sp(Table::Holding, 65534, 2), sp(Table::Holding, 65535, 1)];
        let p = plan(&spans, &Limits::default());
        assert_eq!((p[0].start, p[0].count), (65534, 2));
    }

    #[test]
    fn split_cuts_at_holes_first_then_per_point() {
        // Three contiguous f32 and two more after a hole.
        let spans = [
            sp(Table::Input, 0, 2),
            sp(Table::Input, 2, 2),
            sp(Table::Input, 4, 2),
            sp(Table::Input, 20, 2),
            sp(Table::Input, 22, 2),
        ];
        let p = plan(
            &spans,
            &Limits {
                max_gap: 20,
                ..Limits::default()
            },
        );
        assert_eq!(p.len(), 1);
        let runs = split(&p[0], &spans);
        let shape: Vec<(u16, u16, Vec<usize>)> = runs
            .iter()
            .map(|r| (r.start, r.count, r.points.clone()))
            .collect();
        assert_eq!(shape, vec![(0, 6, vec![0, 1, 2]), (20, 4, vec![3, 4])]);
        let singles = split(&runs[0], &spans);
        assert_eq!(
            singles
                .iter()
                .map(|r| (r.start, r.count))
                .collect::<Vec<_>>(),
            vec![(0, 2), (2, 2), (4, 2)]
        );
        assert_eq!(
            singles.iter().map(|r| r.points.clone()).collect::<Vec<_>>(),
            vec![vec![0], vec![1], vec![2]]
        );
    }

    #[test]
    fn split_gives_one_request_per_distinct_span() {
        let spans = [
            sp(Table::Input, 0, 2),
            sp(Table::Input, 2, 2),
            sp(Table::Input, 0, 2),
            sp(Table::Coil, 0, 1),
        ];
        let p = plan(&spans, &Limits::default());
        let inputs = p.iter().find(|r| r.table == Table::Input).unwrap();
        let s = split(inputs, &spans);
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].start, s[0].count, s[0].points.clone()),
            (0, 2, vec![0, 2])
        );
        assert_eq!(
            (s[1].start, s[1].count, s[1].points.clone()),
            (2, 2, vec![1])
        );
    }

    proptest! {
        /// Every point is covered by exactly one request of its table that contains it,
        /// every request is within limits, and no two requests of a table could be merged.
        #[test]
        fn plan_is_sound_and_minimal(
            raw in prop::collection::vec((0u8..4, 0u16..600, 1u16..5), 1..120),
            max_gap in 0u16..20,
            max_registers in 4u16..=125,
        ) {
            let tables = [Table::Coil, Table::DiscreteInput, Table::Holding, Table::Input];
            let spans: Vec<Span> = raw.iter().map(|&(t, a, c)| {
                let table = tables[usize::from(t)];
                sp(table, a, if table.is_bits() { 1 } else { c })
            }).collect();
            let limits = Limits { max_registers, max_bits: 50, max_gap, max_bit_gap: max_gap };
            let p = plan(&spans, &limits);
            let mut seen = vec![0; spans.len()];
            for r in &p {
                let max = if r.table.is_bits() { limits.max_bits } else { limits.max_registers };
                prop_assert!(r.count <= max);
                for &i in &r.points {
                    seen[i] += 1;
                    let s = spans[i];
                    prop_assert_eq!(s.table, r.table);
                    prop_assert!(s.address >= r.start);
                    prop_assert!(u32::from(s.address) + u32::from(s.count) <= u32::from(r.start) + u32::from(r.count));
                }
            }
            prop_assert!(seen.iter().all(|&n| n == 1));
            // Greedy optimality: the next request could not have absorbed its first span.
            for w in p.windows(2) {
                if w[0].table == w[1].table {
                    let first = w[1].points.iter().map(|&i| spans[i]).min_by_key(|s| s.address).unwrap();
                    let max = if first.table.is_bits() { limits.max_bits } else { limits.max_registers };
                    let gap = if first.table.is_bits() { limits.max_bit_gap } else { limits.max_gap };
                    let end = u32::from(w[0].start) + u32::from(w[0].count);
                    let hole = u32::from(first.address).saturating_sub(end);
                    prop_assert!(hole > u32::from(gap) || first.end().max(end) - u32::from(w[0].start) > u32::from(max));
                }
            }
        }
    }
}
