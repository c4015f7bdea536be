//! Pressure stall information from `/proc/pressure/{cpu,io,memory}`. A kernel without PSI (or
//! booted with psi=0) is normal: the files are absent or refuse reads.

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Record {
    pub avg10: f64,
    pub avg60: f64,
    pub avg300: f64,
    pub total_us: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    pub some: Record,
    /// Absent for CPU on older kernels.
    pub full: Option<Record>,
}

pub const RESOURCES: [&str; 3] = ["cpu", "io", "memory"];

pub fn parse(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut r = Record::default();
        for kv in words {
            let (k, v) = kv.split_once('=')?;
            match k {
                "avg10" => r.avg10 = v.parse().ok()?,
                "avg60" => r.avg60 = v.parse().ok()?,
                "avg300" => r.avg300 = v.parse().ok()?,
                "total" => r.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            "some" => some = Some(r),
            "full" => full = Some(r),
            _ => {}
        }
    }
    Some(Pressure { some: some?, full })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_and_without_full() {
        let p = parse(
            "some avg10=1.50 avg60=0.20 avg300=0.05 total=123\nfull avg10=0.50 avg60=0.10 avg300=0.00 total=45\n",
        )
        .expect("psi");
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.full.map(|f| f.total_us), Some(45));
        let cpu_old = parse("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n").expect("psi");
        assert!(cpu_old.full.is_none());
        assert!(parse("").is_none());
        assert!(parse("garbage\n").is_none());
    }
}
