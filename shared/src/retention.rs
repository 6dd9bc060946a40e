//! Retention terms as the admin's policies state them and elements resolve them into dates.

use chrono::{DateTime, Months, Utc};

/// A retention term: calendar months plus days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Term {
    pub months: u32,
    pub days: u32,
}

impl Term {
    /// Parses `PnYnMnWnD` (any non-empty subset, in that order).
    pub fn parse(s: &str) -> Result<Term, String> {
        let err = || {
            format!("term {s:?} is not an ISO 8601 duration of years, months, weeks and days (e.g. P7Y, P18M, P30D)")
        };
        let rest = s.strip_prefix('P').ok_or_else(err)?;
        if rest.is_empty() {
            return Err(err());
        }
        let (mut months, mut days, mut num, mut last_unit) = (0u64, 0u64, String::new(), 0u8);
        for c in rest.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                'Y' => 1,
                'M' => 2,
                'W' => 3,
                'D' => 4,
                _ => return Err(err()),
            };
            if num.is_empty() || unit <= last_unit {
                return Err(err());
            }
            let n: u64 = num.parse().map_err(|_| err())?;
            num.clear();
            last_unit = unit;
            match unit {
                1 => months += n * 12,
                2 => months += n,
                3 => days += n * 7,
                _ => days += n,
            }
        }
        if !num.is_empty() || (months == 0 && days == 0) || months > 12 * 1000 || days > 366 * 1000 {
            return Err(err());
        }
        Ok(Term { months: months as u32, days: days as u32 })
    }

    /// `start` plus this term.
    pub fn add_to(self, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        start.checked_add_months(Months::new(self.months))?.checked_add_signed(chrono::Duration::days(self.days.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn terms_parse_and_add() {
        assert_eq!(Term::parse("P7Y").unwrap(), Term { months: 84, days: 0 });
        assert_eq!(Term::parse("P1Y6M2W3D").unwrap(), Term { months: 18, days: 17 });
        for bad in ["", "P", "7Y", "P7", "PY", "P1D2Y", "P0D", "PT5H", "P-1Y"] {
            assert!(Term::parse(bad).is_err(), "{bad}");
        }
        // Month arithmetic clamps to the month's end.
        assert_eq!(Term::parse("P1M").unwrap().add_to(at("2026-01-31T00:00:00Z")), Some(at("2026-02-28T00:00:00Z")));
    }
}
