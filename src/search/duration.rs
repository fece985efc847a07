//! Time limits as people write them: "90s", "30m", "2h", "1h30m", "1.5h", "2d"; a bare number is
//! seconds.

use crate::error::{Error, Result};
use std::time::Duration;

pub fn parse_duration(text: &str) -> Result<Duration> {
    let invalid = || Error::Invalid(format!("`{text}` is not a duration of at most a year: write it like 90s, 30m, 2h or 1h30m"));
    let s = text.trim();
    if s.is_empty() {
        return Err(invalid());
    }
    if let Ok(seconds) = s.parse::<f64>() {
        return seconds_to_duration(seconds).ok_or_else(invalid);
    }
    let mut total = 0.0;
    let mut number = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() || c == '.' {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1.0,
            'm' => 60.0,
            'h' => 3600.0,
            'd' => 86400.0,
            _ => return Err(invalid()),
        };
        let value: f64 = number.parse().map_err(|_| invalid())?;
        total += value * unit;
        number.clear();
    }
    if !number.is_empty() {
        return Err(invalid());
    }
    seconds_to_duration(total).ok_or_else(invalid)
}

/// The longest time limit taken: a year. Longer ones are typing errors, and deadlines past an
/// `Instant`'s range would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds >= 0.0 && seconds <= MAX_DURATION.as_secs_f64()).then(|| Duration::from_secs_f64(seconds))
}

/// "1h 05m", "12m 30s", "45.2s".
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 60.0 {
        format!("{s:.1}s")
    } else if s < 3600.0 {
        format!("{}m {:02}s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else {
        format!("{}h {:02}m", (s / 3600.0) as u64, ((s % 3600.0) / 60.0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        let secs = |t: &str| parse_duration(t).unwrap().as_secs_f64();
        assert_eq!(secs("90"), 90.0);
        assert_eq!(secs("90s"), 90.0);
        assert_eq!(secs("30m"), 1800.0);
        assert_eq!(secs("2h"), 7200.0);
        assert_eq!(secs("1h30m"), 5400.0);
        assert_eq!(secs("1.5h"), 5400.0);
        assert_eq!(secs("1d"), 86400.0);
        for bad in ["", "h", "2x", "1h30", "-5", "m30", "1e30", "NaN", "inf", "367d", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "`{bad}` accepted");
        }
        assert_eq!(format_duration(Duration::from_secs(3900)), "1h 05m");
    }
}
