//! The SQL client only reads: the plan of every statement is checked before it runs, and
//! one that would write or register anything is refused.
//!
//! DataFusion runs DDL (`CREATE EXTERNAL TABLE`, `CREATE VIEW`, `DROP TABLE`), DML (`INSERT`,
//! `DELETE`, `UPDATE`), `COPY … TO` and statements that change the session (`SET`, `RESET`,
//! transactions, `PREPARE`) when it executes their logical plan. An `INSERT` into a table
//! would put an uncommitted file in a table folder, which every reader would see and
//! `pageviews verify` would report; `COPY` writes anywhere the process may; `CREATE
//! EXTERNAL TABLE` reads any file; `SET datafusion.runtime.*` would lift the memory budget.
//! DataFusion's own check, [`SQLOptions::verify_plan`], refuses these plan nodes, subqueries
//! and `EXPLAIN ANALYZE` included; this module names the statement for the one-line refusal.
//! Queries, `EXPLAIN`, `SHOW` and `DESCRIBE` plan to nodes it lets through.

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::LogicalPlan;

/// What the session runs: no DDL, no DML or COPY, no statements that change the session.
fn options() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// `Err` with the statement's name (`INSERT INTO`, `CREATE EXTERNAL TABLE`, `SET VARIABLE`)
/// when `plan` would write or register anything.
pub(crate) fn check(plan: &LogicalPlan) -> Result<(), String> {
    match options().verify_plan(plan) {
        Ok(()) => Ok(()),
        Err(_) => Err(refused_statement(plan).unwrap_or_else(|| "this statement".to_string())),
    }
}

/// The name of the first node of `plan` that [`options`] refuses, in SQL's words.
fn refused_statement(plan: &LogicalPlan) -> Option<String> {
    let mut name = None;
    let _ = plan.apply_with_subqueries(|node| {
        name = match node {
            LogicalPlan::Ddl(ddl) => Some(words(ddl.name())),
            LogicalPlan::Dml(dml) => Some(words(dml.op.name())),
            LogicalPlan::Copy(_) => Some("COPY".to_string()),
            LogicalPlan::Statement(statement) => Some(words(statement.name())),
            _ => None,
        };
        Ok(if name.is_some() { TreeNodeRecursion::Stop } else { TreeNodeRecursion::Continue })
    });
    name
}

/// DataFusion's node names (`CreateExternalTable`, `Insert Into`) as SQL's upper-case
/// words (`CREATE EXTERNAL TABLE`, `INSERT INTO`).
fn words(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 && !out.ends_with(' ') {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{SessionConfig, SessionContext};

    fn plan(sql: &str) -> LogicalPlan {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_information_schema(true));
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            ctx.sql("CREATE TABLE t (x BIGINT)").await?.collect().await?;
            ctx.state().create_logical_plan(sql).await
        })
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    #[test]
    fn writes_are_named_in_sql_words() {
        for (sql, name) in [
            ("INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", "INSERT INTO"),
            ("DELETE FROM t", "DELETE"),
            ("COPY t TO '/tmp/x.csv'", "COPY"),
            (
                "CREATE EXTERNAL TABLE e (l VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("CREATE VIEW v AS SELECT * FROM t", "CREATE VIEW"),
            ("DROP TABLE t", "DROP TABLE"),
            ("SET datafusion.execution.batch_size = 1", "SET VARIABLE"),
        ] {
            assert_eq!(check(&plan(sql)), Err(name.to_string()), "{sql}");
        }
    }

    #[test]
    fn reads_pass() {
        for sql in [
            "SELECT * FROM t",
            "WITH u AS (SELECT x FROM t) SELECT * FROM u WHERE x IN (SELECT x FROM t)",
            "EXPLAIN ANALYZE SELECT * FROM t",
            "SHOW TABLES",
            "DESCRIBE t",
        ] {
            assert_eq!(check(&plan(sql)), Ok(()), "{sql}");
        }
    }
}
