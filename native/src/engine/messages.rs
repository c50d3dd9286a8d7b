//! Deny messages in Mimir's exact wording (pkg/distributor/errors.go and
//! pkg/util/globalerror/user.go; docs/research-mimir.md point 4), so a client sees the same
//! text whether the edge or the distributor refused it.

/// Go's `%v` of a float64: shortest representation, exponent form below 1e-4 or from 1e21.
pub fn go_float(v: f64) -> String {
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v.is_nan() {
        return "NaN".into();
    }
    let abs = v.abs();
    if v != 0.0 && !(1e-4..1e21).contains(&abs) {
        // Rust's `{:e}` gives `1e21` / `1.5e-5`; Go writes `1e+21` / `1.5e-05`.
        let s = format!("{v:e}");
        let (mantissa, exp) = s.split_once('e').unwrap_or((&s, "0"));
        let exp: i32 = exp.parse().unwrap_or(0);
        let sign = if exp < 0 { '-' } else { '+' };
        return format!("{mantissa}e{sign}{:02}", exp.abs());
    }
    format!("{v}")
}

pub fn request_rate(rate: f64, burst: u64) -> String {
    format!(
        "the request has been rejected because the tenant exceeded the request rate limit, set to {} requests/s across all distributors with a maximum allowed burst of {burst} (err-mimir-tenant-max-request-rate). To adjust the related per-tenant limits, configure -distributor.request-rate-limit and -distributor.request-burst-size, or contact your service administrator.",
        go_float(rate)
    )
}

pub fn ingestion_rate(rate: f64, burst: u64) -> String {
    format!(
        "the request has been rejected because the tenant exceeded the ingestion rate limit, set to {} items/s with a maximum allowed burst of {burst}. This limit is applied on the total number of samples, exemplars and metadata received across all distributors (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure -distributor.ingestion-rate-limit and -distributor.ingestion-burst-size, or contact your service administrator.",
        go_float(rate)
    )
}

pub fn ingestion_burst(burst: u64, items: u64) -> String {
    format!(
        "the request has been rejected because the tenant exceeded the ingestion burst size limit, set to {burst}, with {items} items. This limit is applied on the total number of samples, exemplars and metadata received across all distributors (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limit, configure -distributor.ingestion-burst-size, or contact your service administrator."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(go_float(10000.0), "10000");
        assert_eq!(go_float(0.5), "0.5");
        assert_eq!(go_float(1e21), "1e+21");
        assert_eq!(go_float(1.5e-5), "1.5e-05");
        assert_eq!(go_float(0.0), "0");
    }

    #[test]
    fn default_ingestion_message_is_mimirs() {
        assert_eq!(
            ingestion_rate(10000.0, 200000),
            "the request has been rejected because the tenant exceeded the ingestion rate limit, set to 10000 items/s with a maximum allowed burst of 200000. This limit is applied on the total number of samples, exemplars and metadata received across all distributors (err-mimir-tenant-max-ingestion-rate). To adjust the related per-tenant limits, configure -distributor.ingestion-rate-limit and -distributor.ingestion-burst-size, or contact your service administrator."
        );
    }
}
