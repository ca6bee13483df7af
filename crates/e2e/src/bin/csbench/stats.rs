//! Medians, spreads and the result table.

/// `v` printed with `digits` decimals, or with more (up to 6) where that many would print it
/// as the target's own number although it lies on the other side of it: a MISS never reads
/// "0.900 (target ≥ 0.90)".
pub fn near(v: f64, limit: f64, digits: usize) -> String {
    let mut d = digits;
    while d < 6 && v != limit && format!("{v:.d$}") == format!("{limit:.d$}") {
        d += 1;
    }
    format!("{v:.d$}")
}

/// Median of `v` (sorted copy; the mean of the two middle values for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Samples of one variant: all samples pooled, plus each run's median (for the spread).
#[derive(Default, Clone)]
pub struct Samples {
    pub all: Vec<f64>,
    pub run_medians: Vec<f64>,
}

impl Samples {
    pub fn add_run(&mut self, v: &[f64]) {
        self.run_medians.push(median(v));
        self.all.extend_from_slice(v);
    }

    /// Median of every sample pooled.
    pub fn median(&self) -> f64 {
        median(&self.all)
    }

    /// `min–max of the run medians`, for the table's spread column.
    pub fn spread(&self, scale: f64, digits: usize) -> String {
        let lo = self
            .run_medians
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let hi = self
            .run_medians
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        if !lo.is_finite() {
            return String::new();
        }
        format!(
            "{:.*}–{:.*} ({} runs)",
            digits,
            lo * scale,
            digits,
            hi * scale,
            self.run_medians.len()
        )
    }
}

/// One row of the result table.
pub struct Row {
    pub case: String,
    pub what: String,
    pub median: String,
    pub derived: String,
    pub spread: String,
    pub target: String,
    /// `Some(pass)` for a row that checks a target.
    pub pass: Option<bool>,
}

impl Row {
    pub fn info(case: &str, what: &str, median: String, derived: String, spread: String) -> Row {
        Row {
            case: case.into(),
            what: what.into(),
            median,
            derived,
            spread,
            target: String::new(),
            pass: None,
        }
    }

    pub fn check(case: &str, what: &str, value: String, target: &str, pass: bool) -> Row {
        Row {
            case: case.into(),
            what: what.into(),
            median: value,
            derived: String::new(),
            spread: String::new(),
            target: target.into(),
            pass: Some(pass),
        }
    }

    pub fn result(&self) -> &'static str {
        match self.pass {
            Some(true) => "**PASS**",
            Some(false) => "**MISS**",
            None => "",
        }
    }
}

/// The table in Markdown (printed as is, and written to docs/benchmarks.md).
pub fn markdown(rows: &[Row]) -> String {
    let mut s = String::from(
        "| case | what | median | derived | spread of run medians | target | result |\n\
         |---|---|---:|---:|---|---|---|\n",
    );
    for r in rows {
        s.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.case,
            r.what,
            r.median,
            r.derived,
            r.spread,
            r.target,
            r.result()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::near;

    #[test]
    fn a_ratio_never_prints_as_its_target_from_the_other_side() {
        assert_eq!(near(0.8996, 0.9, 3), "0.8996");
        assert_eq!(near(1.10004, 1.1, 3), "1.10004");
        assert_eq!(near(0.95, 0.9, 3), "0.950");
        assert_eq!(near(0.9, 0.9, 3), "0.900");
        assert_eq!(near(2.004, 2.0, 2), "2.004");
    }
}
