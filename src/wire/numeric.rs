//! PostgreSQL `numeric` from an Arrow decimal (i128 with a scale), in text and binary form,
//! for every precision Arrow's Decimal128 holds (up to 38 digits).

use std::error::Error;

use bytes::{BufMut, BytesMut};
use pgwire::api::Type;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use postgres_types::{IsNull, ToSql, to_sql_checked};

/// A decimal value: `value / 10^scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numeric {
    /// The unscaled value.
    pub value: i128,
    /// Digits after the decimal point.
    pub scale: u32,
}

impl Numeric {
    /// The value in PostgreSQL's text form, keeping the scale (`12.50`).
    pub fn to_text(self) -> String {
        let digits = self.value.unsigned_abs().to_string();
        let scale = self.scale as usize;
        let sign = if self.value < 0 { "-" } else { "" };
        if scale == 0 {
            return format!("{sign}{digits}");
        }
        let padded = format!("{digits:0>width$}", width = scale + 1);
        let (int, frac) = padded.split_at(padded.len() - scale);
        format!("{sign}{int}.{frac}")
    }

    /// Base-10000 digit groups and the weight of the first, as the binary format wants.
    fn groups(self) -> (Vec<i16>, i16) {
        let text = self.to_text();
        let text = text.trim_start_matches('-');
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let int = int.trim_start_matches('0');
        let int_len = int.len().div_ceil(4) * 4;
        let int = format!("{int:0>int_len$}");
        let frac_len = frac.len().div_ceil(4) * 4;
        let frac = format!("{frac:0<frac_len$}");
        let mut groups: Vec<i16> = int
            .as_bytes()
            .chunks(4)
            .chain(frac.as_bytes().chunks(4))
            .map(|c| {
                std::str::from_utf8(c)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0)
            })
            .collect();
        let mut weight = i16::try_from(int_len / 4).unwrap_or(0) - 1;
        while groups.first() == Some(&0) {
            groups.remove(0);
            weight -= 1;
        }
        while groups.last() == Some(&0) {
            groups.pop();
        }
        if groups.is_empty() {
            weight = 0;
        }
        (groups, weight)
    }
}

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let (groups, weight) = self.groups();
        out.put_i16(i16::try_from(groups.len())?);
        out.put_i16(weight);
        out.put_u16(if self.value < 0 { 0x4000 } else { 0x0000 });
        out.put_u16(u16::try_from(self.scale)?);
        for g in groups {
            out.put_i16(g);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

impl ToSqlText for Numeric {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.to_text().as_bytes());
        Ok(IsNull::No)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(value: i128, scale: u32) -> Numeric {
        Numeric { value, scale }
    }

    #[test]
    fn text_keeps_the_scale() {
        assert_eq!(n(1250, 2).to_text(), "12.50");
        assert_eq!(n(-5, 2).to_text(), "-0.05");
        assert_eq!(n(0, 3).to_text(), "0.000");
        assert_eq!(n(42, 0).to_text(), "42");
        assert_eq!(
            n(i128::MAX, 2).to_text(),
            "1701411834604692317316873037158841057.27"
        );
    }

    #[test]
    fn binary_digit_groups_follow_postgres() {
        // 12345.678 → groups [1, 2345, 6780], weight 1 (as PostgreSQL sends it)
        assert_eq!(n(12_345_678, 3).groups(), (vec![1, 2345, 6780], 1));
        // 0.0012 → groups [12], weight -1
        assert_eq!(n(12, 4).groups(), (vec![12], -1));
        // 10000 → groups [1], weight 1
        assert_eq!(n(10_000, 0).groups(), (vec![1], 1));
        assert_eq!(n(0, 2).groups(), (vec![], 0));
    }
}
