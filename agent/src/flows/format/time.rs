//! UTC calendar arithmetic for timestamps, written out so the formatters need no date
//! crate. Records only carry times after 1970, so only non-negative days are handled.

use crate::flows::record::UnixNanos;

/// A UTC instant broken into calendar fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: u64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub nanosecond: u32,
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

impl Civil {
    pub fn from_unix_nanos(time: UnixNanos) -> Self {
        let seconds = time.0 / NANOS_PER_SECOND;
        let nanosecond = (time.0 % NANOS_PER_SECOND) as u32;
        let days = seconds / SECONDS_PER_DAY;
        let second_of_day = seconds % SECONDS_PER_DAY;
        let (year, month, day) = date_from_days(days);
        Civil {
            year,
            month,
            day,
            hour: (second_of_day / 3600) as u32,
            minute: (second_of_day % 3600 / 60) as u32,
            second: (second_of_day % 60) as u32,
            nanosecond,
        }
    }

    /// RFC 3339 `date-time` in UTC with `fraction_digits` (1..=9) digits of fractional
    /// second, truncated, and the `Z` offset: `2003-10-11T22:14:15.003Z`.
    pub fn rfc3339(&self, fraction_digits: u32) -> String {
        let digits = fraction_digits.clamp(1, 9);
        let fraction = self.nanosecond / 10u32.pow(9 - digits);
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:0width$}Z",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            fraction,
            width = digits as usize
        )
    }

    /// Millisecond timestamp matching the Java pattern [`JAVA_MILLIS_PATTERN`], which
    /// QRadar reads through LEEF's `devTimeFormat`: `2021-03-01T20:46:50.869+0000`.
    pub fn java_millis(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}+0000",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            self.nanosecond / 1_000_000
        )
    }
}

/// Java `SimpleDateFormat` pattern of [`Civil::java_millis`].
pub const JAVA_MILLIS_PATTERN: &str = "yyyy-MM-dd'T'HH:mm:ss.SSSZ";

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
///
/// Counts in 400-year eras that start on March 1st, so the leap day is the last day of
/// the counted year and every month length except February's is fixed.
fn date_from_days(days_since_epoch: u64) -> (u64, u32, u32) {
    // 1970-01-01 is day 719_468 counted from 0000-03-01.
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March: 0 = March ... 11 = February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64, nanos: u64) -> Civil {
        Civil::from_unix_nanos(UnixNanos(seconds * NANOS_PER_SECOND + nanos))
    }

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(at(0, 0).rfc3339(3), "1970-01-01T00:00:00.000Z");
        // RFC 5424 section 6.5 example 1 timestamp.
        assert_eq!(
            at(1_065_910_455, 3_000_000).rfc3339(3),
            "2003-10-11T22:14:15.003Z"
        );
        // Leap day and the day after it.
        assert_eq!(at(951_782_400, 0).rfc3339(1), "2000-02-29T00:00:00.0Z");
        assert_eq!(at(951_868_800, 0).rfc3339(1), "2000-03-01T00:00:00.0Z");
        // Last second of a year, full nanosecond precision.
        assert_eq!(
            at(1_704_067_199, 999_999_999).rfc3339(9),
            "2023-12-31T23:59:59.999999999Z"
        );
        // Microseconds are truncated, not rounded.
        assert_eq!(
            at(1_704_067_199, 999_999_999).rfc3339(6),
            "2023-12-31T23:59:59.999999Z"
        );
    }

    #[test]
    fn every_day_for_five_centuries_round_trips() {
        // Independent check: walk the calendar forward one day at a time.
        let (mut year, mut month, mut day) = (1970u64, 1u32, 1u32);
        for days in 0..(500 * 366) {
            assert_eq!(date_from_days(days), (year, month, day), "day {days}");
            let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
            let length = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > length {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
