//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`), parsed for comparison.

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a Kubernetes quantity (examples: 500m, 2, 256Mi, 1.5Gi)")]
pub struct QuantityError(pub String);

/// The value of a quantity in base units (cores, bytes), as a float: exact enough to compare
/// limits, which is all Palisade does with them.
pub fn parse(q: &str) -> Result<f64, QuantityError> {
    let err = || QuantityError(q.to_string());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(err());
    }
    let value: f64 = number.parse().map_err(|_| err())?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => {
            let exp: i32 = e[1..].parse().map_err(|_| err())?;
            10f64.powi(exp)
        }
        _ => return Err(err()),
    };
    Ok(value * multiplier)
}

pub fn parse_quantity(q: &Quantity) -> Result<f64, QuantityError> {
    parse(&q.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_usual_forms() {
        assert_eq!(parse("500m").unwrap(), 0.5);
        assert_eq!(parse("2").unwrap(), 2.0);
        assert_eq!(parse("256Mi").unwrap(), 256.0 * 1024.0 * 1024.0);
        assert_eq!(parse("1.5Gi").unwrap(), 1.5 * 1024.0 * 1024.0 * 1024.0);
        assert_eq!(parse("1G").unwrap(), 1e9);
        assert_eq!(parse("2e3").unwrap(), 2000.0);
        assert_eq!(parse(".5").unwrap(), 0.5);
        assert!(parse("2000m").unwrap() == parse("2").unwrap());
    }

    #[test]
    fn refuses_garbage() {
        for bad in ["", "abc", "1.2.3", "5Xi", "m", "1 Gi", "."] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
