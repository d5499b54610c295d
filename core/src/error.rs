//! Errors at the edge: one line a person can act on.

/// An error and its causes on one line, leaving out a cause whose text the message before
/// it already carries (object_store, rdkafka and DataFusion repeat their sources in their
/// own messages). Both binaries print their errors with it.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = String::new();
    let mut cause = Some(e);
    while let Some(err) = cause {
        let text = err.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        cause = err.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct E(String, #[source] Option<Box<E>>);

    #[test]
    fn causes_join_once_each() {
        let inner = E("connection refused".into(), None);
        let mid = E("list page_views failed: connection refused".into(), Some(Box::new(inner)));
        let top = E("cannot open the output".into(), Some(Box::new(mid)));
        assert_eq!(error_chain(&top), "cannot open the output: list page_views failed: connection refused");
    }
}
