//! MetricFlow's offsets and windows as kpitables' `compare` and `window`, and the grains
//! of metric_time at which MetricFlow's answer to each is the one kpitables gives.

/// `7 days` → `7 days`; `1 week` → `1 weeks`; years and quarters in months.
pub(super) fn trailing(window: &str) -> Result<String, String> {
    let mut words = window.split_whitespace();
    let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!("window \"{window}\" is not \"<count> <unit>\""));
    };
    let n: u32 = n
        .parse()
        .map_err(|_| format!("window \"{window}\": \"{n}\" is not a count"))?;
    let unit = unit.to_ascii_lowercase();
    let unit = unit.trim_end_matches('s');
    Ok(match unit {
        "minute" => format!("{n} minutes"),
        "hour" => format!("{n} hours"),
        "day" => format!("{n} days"),
        "week" => format!("{n} weeks"),
        "month" => format!("{n} months"),
        "quarter" => format!("{} months", n * 3),
        "year" => format!("{} months", n * 12),
        other => return Err(format!("window \"{window}\": unit {other} is not mapped")),
    })
}

/// The standard grains of metric_time, finest first.
pub(super) const GRAINS: [&str; 5] = ["day", "week", "month", "quarter", "year"];

/// An `offset_to_grain` as a kpitables `compare` (`start_of_month`), and the grains at
/// which MetricFlow's answer is the first day's rows as kpitables': by day, by week, and
/// at the grains coarser than the offset's, MetricFlow takes each period's first day of
/// its spine of days (a period whose first day is not in the range has no row, as in
/// kpitables); at the others it joins the spine's periods after aggregating (a month by
/// month gets its own month's value, not its first day's).
pub(super) fn start_of(grain: &str, simple: bool) -> Result<(String, Vec<String>), String> {
    match grain.to_ascii_lowercase().as_str() {
        g @ ("week" | "month" | "quarter" | "year") if !simple => {
            Ok((format!("start_of_{g}"), vec!["day".to_string()]))
        }
        g @ ("week" | "month" | "quarter" | "year") => {
            // (By week MetricFlow always moves days: a week's first day.)
            let mut grains = vec!["day".to_string(), "week".to_string()];
            grains.extend(
                GRAINS
                    .iter()
                    .skip_while(|c| **c != g)
                    .skip(1)
                    .filter(|c| **c != "week")
                    .map(|c| c.to_string()),
            );
            Ok((format!("start_of_{g}"), grains))
        }
        other => Err(format!(
            "offset_to_grain {other} is not mapped (week, month, quarter, year are)"
        )),
    }
}

/// An `offset_window` as a kpitables `compare` offset, and the grains at which
/// MetricFlow's answer equals the rows moved by the offset. MetricFlow joins its spine
/// of days before aggregating when the query's grain is coarser than the offset's unit
/// (each day's rows moved by the offset), and periods of the query's grain after
/// aggregating otherwise (`month - INTERVAL 1 month`). Days and weeks move every day to
/// one day: every grain (of a simple metric; another metric's periods MetricFlow joins
/// after aggregating at every grain: those that are whole numbers of the offset).
/// Calendar months do not (the 29th to the 31st of March are
/// all a month after the 29th of February): month offsets by day (each day reads the
/// day the offset before it, as kpitables does by day) and at the grains of a whole
/// number of months no finer than the unit, joined as periods.
pub(super) fn offset(window: &str, simple: bool) -> Result<(String, Vec<String>), String> {
    let mut words = window.split_whitespace();
    let (Some(n), Some(unit), None) = (words.next(), words.next(), words.next()) else {
        return Err(format!(
            "offset_window \"{window}\" is not \"<count> <unit>\""
        ));
    };
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("offset_window \"{window}\": \"{n}\" is not a count"))?;
    let unit = unit.to_ascii_lowercase();
    let (unit, grains): (&str, &[&str]) = match unit.trim_end_matches('s') {
        // Joined after aggregating: periods whole numbers of the offset.
        "day" if !simple && n.is_multiple_of(7) => ("days", &["day", "week"]),
        "day" if !simple => ("days", &["day"]),
        "week" if !simple => ("weeks", &["day", "week"]),
        "day" => ("days", &GRAINS),
        "week" => ("weeks", &GRAINS),
        "month" => ("months", &["day", "month"]),
        "quarter" => ("quarters", &["day", "month", "quarter"]),
        "year" => ("years", &["day", "month", "quarter", "year"]),
        "hour" | "minute" | "second" => {
            return Err(format!(
                "offset_window \"{window}\": unit {unit} is not mapped (metric_time is a date in kpitables)"
            ));
        }
        // A custom granularity: kpitables' compare = "1 <grain>" of a calendar grain
        // moves each day to the same position in the next period, as MetricFlow; but
        // MetricFlow keeps the rows whose day has no such position (the spine's last
        // period) under a NULL metric_time, a row kpitables has no meaning for.
        other => {
            return Err(format!(
                "offset_window \"{window}\": an offset by the custom granularity {other} is not mapped (MetricFlow answers the rows that move past its spine's last {other} as a period of NULL metric_time)"
            ));
        }
    };
    Ok((
        format!("{n} {unit}"),
        grains.iter().map(|g| g.to_string()).collect(),
    ))
}

/// The grains at which an offset of `days` joined after aggregating (a derived metric's)
/// is the rows moved: the day, and the week for whole weeks.
pub(super) fn offset_grains_after_aggregating(days: u32) -> Vec<String> {
    if days.is_multiple_of(7) {
        vec!["day".to_string(), "week".to_string()]
    } else {
        vec!["day".to_string()]
    }
}

/// The days of an `offset_window` in days or weeks (`None` for months and longer).
pub(super) fn days_of(window: &str) -> Option<u32> {
    let mut words = window.split_whitespace();
    let n: u32 = words.next()?.parse().ok()?;
    match words.next()?.to_ascii_lowercase().trim_end_matches('s') {
        "day" => Some(n),
        "week" => Some(n * 7),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grains(r: Result<(String, Vec<String>), String>) -> (String, Vec<String>) {
        r.unwrap()
    }

    #[test]
    fn offsets_in_days_move_rows_at_every_grain_of_a_simple_metric_only() {
        assert_eq!(grains(offset("5 days", true)).1, GRAINS);
        assert_eq!(grains(offset("5 days", false)).1, ["day"]);
        assert_eq!(grains(offset("14 days", false)).1, ["day", "week"]);
        assert_eq!(grains(offset("1 week", true)).0, "1 weeks");
    }

    #[test]
    fn calendar_offsets_are_served_by_day_and_whole_periods() {
        assert_eq!(grains(offset("1 month", true)).1, ["day", "month"]);
        assert_eq!(
            grains(offset("1 year", true)),
            (
                "1 years".to_string(),
                vec![
                    "day".into(),
                    "month".into(),
                    "quarter".into(),
                    "year".into()
                ]
            )
        );
        assert!(offset("1 alien_day", true).is_err());
    }

    #[test]
    fn a_first_day_is_served_by_day_week_and_coarser_grains() {
        assert_eq!(
            grains(start_of("month", true)).1,
            ["day", "week", "quarter", "year"]
        );
        assert_eq!(grains(start_of("week", true)).1, GRAINS);
        assert_eq!(grains(start_of("month", false)).1, ["day"]);
        assert!(start_of("hour", true).is_err());
    }

    #[test]
    fn days_of_days_and_weeks_only() {
        assert_eq!(days_of("2 weeks"), Some(14));
        assert_eq!(days_of("5 days"), Some(5));
        assert_eq!(days_of("1 month"), None);
        assert_eq!(offset_grains_after_aggregating(7), ["day", "week"]);
    }
}
