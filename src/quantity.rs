//! Kubernetes resource quantities: parsing, validation and the canonical form the API server stores
//! (`2000m` → `2`, `1024Mi` → `1Gi`, `0.5` → `500m`).
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

/// Why a quantity could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a valid quantity (expected a number with an optional suffix such as 100m, 2, 128Mi, 1Gi)")]
pub struct QuantityError(pub String);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    DecimalSi,
    BinarySi,
    DecimalExponent,
}

/// A parsed quantity: its value in units of 10⁻⁹ and the suffix family it was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

const NANO: i128 = 1_000_000_000;

impl Quantity {
    /// Parses a quantity such as `100m`, `1.5`, `128Mi`, `1e3`.
    pub fn parse(text: &str) -> Result<Self, QuantityError> {
        let err = || QuantityError(text.to_owned());
        let s = text.trim();
        if s.is_empty() {
            return Err(err());
        }
        let (negative, body) = if let Some(rest) = s.strip_prefix('-') {
            (true, rest)
        } else {
            (false, s.strip_prefix('+').unwrap_or(s))
        };
        let number_end = body
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(body.len());
        let (number, suffix) = body.split_at(number_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if frac_part.len() > 9 || int_part.len() > 20 {
            return Err(err());
        }
        let int: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse().map_err(|_| err())?
        };
        let frac: i128 = if frac_part.is_empty() {
            0
        } else {
            format!("{frac_part:0<9}").parse().map_err(|_| err())?
        };
        let base = int
            .checked_mul(NANO)
            .and_then(|v| v.checked_add(frac))
            .ok_or_else(err)?;
        let (multiplier, divisor, format): (i128, i128, Format) = match suffix {
            "" => (1, 1, Format::DecimalSi),
            "n" => (1, NANO, Format::DecimalSi),
            "u" => (1, 1_000_000, Format::DecimalSi),
            "m" => (1, 1000, Format::DecimalSi),
            "k" => (1000, 1, Format::DecimalSi),
            "M" => (1_000_000, 1, Format::DecimalSi),
            "G" => (NANO, 1, Format::DecimalSi),
            "T" => (1_000_000_000_000, 1, Format::DecimalSi),
            "P" => (1_000_000_000_000_000, 1, Format::DecimalSi),
            "E" => (1_000_000_000_000_000_000, 1, Format::DecimalSi),
            "Ki" => (1 << 10, 1, Format::BinarySi),
            "Mi" => (1 << 20, 1, Format::BinarySi),
            "Gi" => (1 << 30, 1, Format::BinarySi),
            "Ti" => (1 << 40, 1, Format::BinarySi),
            "Pi" => (1 << 50, 1, Format::BinarySi),
            "Ei" => (1 << 60, 1, Format::BinarySi),
            exp if exp.starts_with(['e', 'E']) => {
                let e: i32 = exp[1..].parse().map_err(|_| err())?;
                if !(-9..=18).contains(&e) {
                    return Err(err());
                }
                if e >= 0 {
                    (10i128.pow(e as u32), 1, Format::DecimalExponent)
                } else {
                    (1, 10i128.pow((-e) as u32), Format::DecimalExponent)
                }
            }
            _ => return Err(err()),
        };
        let scaled = base.checked_mul(multiplier).ok_or_else(err)?;
        // Precision below a nano-unit is rounded up, as the API server does.
        let nanos = (scaled + divisor - 1) / divisor;
        Ok(Self {
            nanos: if negative { -nanos } else { nanos },
            format,
        })
    }

    /// The canonical text of this quantity.
    pub fn canonical(&self) -> String {
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.abs();
        if n == 0 {
            return "0".to_owned();
        }
        if self.format == Format::BinarySi && n % NANO == 0 {
            let mut units = n / NANO;
            let suffixes = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut i = 0;
            while i + 1 < suffixes.len() && units % 1024 == 0 {
                units /= 1024;
                i += 1;
            }
            if i > 0 || units < 1024 {
                return format!("{sign}{units}{}", suffixes.get(i).unwrap_or(&""));
            }
        }
        // Decimal: the largest power-of-1000 exponent that keeps an integer mantissa.
        let exponents: [(i128, &str, &str); 10] = [
            (1, "n", "e-9"),
            (1000, "u", "e-6"),
            (1_000_000, "m", "e-3"),
            (NANO, "", ""),
            (NANO * 1000, "k", "e3"),
            (NANO * 1_000_000, "M", "e6"),
            (NANO * NANO, "G", "e9"),
            (NANO * NANO * 1000, "T", "e12"),
            (NANO * NANO * 1_000_000, "P", "e15"),
            (NANO * NANO * NANO, "E", "e18"),
        ];
        let mut best = exponents[0];
        for e in exponents {
            if n % e.0 == 0 {
                best = e;
            }
        }
        let suffix = if self.format == Format::DecimalExponent {
            best.2
        } else {
            best.1
        };
        format!("{sign}{}{suffix}", n / best.0)
    }

    /// The value in milli-units, rounded up (for CPU: millicores).
    pub fn milli_value(&self) -> i128 {
        (self.nanos + 999_999).div_euclid(1_000_000)
    }

    /// The value in whole units, rounded up.
    pub fn value(&self) -> i128 {
        (self.nanos + NANO - 1).div_euclid(NANO)
    }
}

/// The canonical text of a quantity, or an error naming what is wrong.
pub fn canonical(text: &str) -> Result<String, QuantityError> {
    Quantity::parse(text).map(|q| q.canonical())
}

/// Puts the quantities of a container's `resources` (`requests`, `limits`) in canonical form, in place; values
/// that are not quantities are left as they are (validation reports them elsewhere).
pub fn canonicalize_resources(resources: &mut serde_json::Value) {
    use serde_json::Value;
    for kind in ["requests", "limits"] {
        if let Some(map) = resources.get_mut(kind).and_then(Value::as_object_mut) {
            for q in map.values_mut() {
                let text = match q {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                if let Ok(c) = canonical(&text) {
                    *q = Value::String(c);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_match_the_api_server() {
        for (input, want) in [
            ("2000m", "2"),
            ("2", "2"),
            ("100m", "100m"),
            ("1024Mi", "1Gi"),
            ("128Mi", "128Mi"),
            ("1536Mi", "1536Mi"),
            ("0.5", "500m"),
            ("4000m", "4"),
            ("1.5Gi", "1536Mi"),
            ("0", "0"),
            ("1e3", "1e3"),
            ("1000", "1k"),
            ("123m", "123m"),
            ("512Ki", "512Ki"),
        ] {
            assert_eq!(canonical(input).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn garbage_is_refused() {
        for bad in ["", "abc", "1.2.3", "10 m", "1Zi", "m", "--1"] {
            assert!(canonical(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn milli_values() {
        assert_eq!(Quantity::parse("4000m").unwrap().milli_value(), 4000);
        assert_eq!(Quantity::parse("1.5").unwrap().milli_value(), 1500);
        assert_eq!(Quantity::parse("1Gi").unwrap().value(), 1 << 30);
    }
}
