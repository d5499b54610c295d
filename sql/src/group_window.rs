//! Flink's group windows, in DataFusion's words: a statement is parsed here, and before it
//! is planned `TUMBLE(ts, size)` and `TUMBLE_START(ts, size)` become
//! `date_bin(size, ts)`, `TUMBLE_END(ts, size)` becomes `date_bin(size, ts) + size` (the
//! exclusive end) and `TUMBLE_ROWTIME(ts, size)` that end less a millisecond (the last
//! instant in the window).
//!
//! Rewriting the syntax rather than adding functions keeps one way of saying a window:
//! DataFusion plans the `GROUP BY` of `date_bin` it always does, and streaming mode
//! (`stream::plan`) recognises it as the epoch-aligned tumbling window it already follows,
//! so both modes give Flink's query the answer of the `date_bin` query. A result column
//! left unnamed is named after what was written (`TUMBLE_START("timestamp", INTERVAL '1'
//! MINUTE)`), not after the `date_bin` it became.
//!
//! Flink's other windows (`HOP`, `SESSION`, `CUMULATE`) and its windowing table functions
//! (`TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), …))`) are refused here, saying what to write.

use std::ops::ControlFlow;

use datafusion::execution::SessionState;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList, FunctionArguments,
    Ident, Interval, ObjectName, Select, SelectItem, Value, VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use thiserror::Error;

use crate::SqlError;

/// How a tumbling window is written, for the hints.
const TUMBLE: &str = "GROUP BY TUMBLE(\"timestamp\", INTERVAL '1' MINUTE), … with \
                      TUMBLE_START(\"timestamp\", INTERVAL '1' MINUTE) AS window_start in the SELECT";

/// A Flink window this client cannot group by, or one written with the wrong arguments.
#[derive(Debug, Error)]
pub enum GroupWindowError {
    /// A window other than a tumbling one, or a function of one.
    #[error("{function}(…) is not supported: {why}.\nhint: {instead}")]
    Unsupported {
        /// The function as written.
        function: String,
        /// Why it is refused.
        why: &'static str,
        /// What to write instead.
        instead: String,
    },
    /// One of Flink's windowing table functions: `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), …))`.
    #[error(
        "TABLE({function}(…)) is not supported: there are no windowing table functions.\n\
         hint: group by a tumbling window instead: {TUMBLE}"
    )]
    TableFunction {
        /// The window function, in capitals.
        function: String,
    },
    /// A `TUMBLE` function called with other than an expression and an interval literal.
    #[error(
        "{function} takes the event time and the window's size as an interval: \
         {function}(\"timestamp\", INTERVAL '1' MINUTE)"
    )]
    Arguments {
        /// The function as written.
        function: String,
    },
}

/// Parses `sql` as `state` would, with Flink's group windows rewritten (see the module doc).
pub(crate) fn parse(state: &SessionState, sql: &str) -> Result<Statement, SqlError> {
    let dialect = state.config_options().sql_parser.dialect;
    let mut statement = match state.sql_to_statement(sql, &dialect) {
        Ok(statement) => statement,
        Err(e) => {
            // The table-function form does not parse (`TABLE t` is no expression): found by
            // its tokens, it is refused with a hint instead of a syntax error.
            refuse_table_function(sql)?;
            return Err(e.into());
        }
    };
    rewrite(&mut statement)?;
    Ok(statement)
}

/// Rewrites Flink's group-window functions in `statement`, `EXPLAIN`'s included.
pub(crate) fn rewrite(statement: &mut Statement) -> Result<(), GroupWindowError> {
    match statement {
        Statement::Statement(s) => match s.visit(&mut Rewriter) {
            ControlFlow::Continue(()) => Ok(()),
            ControlFlow::Break(e) => Err(e),
        },
        Statement::Explain(explain) => rewrite(&mut explain.statement),
        // COPY and CREATE EXTERNAL TABLE are refused before they run (`read_only`).
        Statement::CreateExternalTable(_) | Statement::CopyTo(_) | Statement::Reset(_) => Ok(()),
    }
}

/// Refuses `TABLE(TUMBLE(…))` and Flink's other windowing table functions.
fn refuse_table_function(sql: &str) -> Result<(), GroupWindowError> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else { return Ok(()) };
    let code: Vec<&Token> = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect();
    for w in code.windows(4) {
        let [Token::Word(table), Token::LParen, Token::Word(function), Token::LParen] = w else { continue };
        let name = function.value.to_ascii_uppercase();
        if table.quote_style.is_none()
            && table.value.eq_ignore_ascii_case("TABLE")
            && ["TUMBLE", "HOP", "CUMULATE", "SESSION"].contains(&name.as_str())
        {
            return Err(GroupWindowError::TableFunction { function: name });
        }
    }
    Ok(())
}

/// What a Flink group-window function is written as.
enum Rewrite {
    /// `date_bin(size, ts)`: the window, or its start.
    Start,
    /// The window's start plus its size.
    End,
    /// The window's end less a millisecond.
    Rowtime,
}

/// The rewrite of the function called `name`, or `None` when it is no window function.
fn rewrite_of(name: &str) -> Result<Option<Rewrite>, GroupWindowError> {
    let upper = name.to_ascii_uppercase();
    let refuse = |why, instead: &str| {
        Err(GroupWindowError::Unsupported { function: upper.clone(), why, instead: instead.to_string() })
    };
    match upper.as_str() {
        "TUMBLE" | "TUMBLE_START" => Ok(Some(Rewrite::Start)),
        "TUMBLE_END" => Ok(Some(Rewrite::End)),
        "TUMBLE_ROWTIME" => Ok(Some(Rewrite::Rowtime)),
        "TUMBLE_PROCTIME" => refuse(
            "windows are of the event time, and there is no processing-time attribute",
            "TUMBLE_END(\"timestamp\", …) is the window's end",
        ),
        "HOP" | "HOP_START" | "HOP_END" | "HOP_ROWTIME" | "HOP_PROCTIME" => refuse(
            "windows are tumbling (HOP's windows overlap)",
            &format!("group by a tumbling window: {TUMBLE}"),
        ),
        "SESSION" | "SESSION_START" | "SESSION_END" | "SESSION_ROWTIME" | "SESSION_PROCTIME" => refuse(
            "windows are tumbling (a SESSION window's length depends on its events)",
            &format!("group by a tumbling window: {TUMBLE}"),
        ),
        _ => Ok(None),
    }
}

/// The rewrite of a function call's name, when it is a Flink window function.
fn window_function(f: &Function) -> Result<Option<Rewrite>, GroupWindowError> {
    match f.name.0.as_slice() {
        [part] => part.as_ident().map_or(Ok(None), |ident| rewrite_of(&ident.value)),
        _ => Ok(None),
    }
}

/// The time expression and the interval of a window function's call.
fn arguments(f: &Function) -> Result<(Expr, Expr), GroupWindowError> {
    let wrong = || GroupWindowError::Arguments { function: f.name.to_string().to_ascii_uppercase() };
    let FunctionArguments::List(FunctionArgumentList { duplicate_treatment: None, args, clauses }) = &f.args
    else {
        return Err(wrong());
    };
    let plain = clauses.is_empty()
        && f.filter.is_none()
        && f.over.is_none()
        && f.null_treatment.is_none()
        && f.within_group.is_empty();
    match args.as_slice() {
        [FunctionArg::Unnamed(FunctionArgExpr::Expr(time)), FunctionArg::Unnamed(FunctionArgExpr::Expr(size @ Expr::Interval(_)))]
            if plain =>
        {
            Ok((time.clone(), size.clone()))
        }
        _ => Err(wrong()),
    }
}

fn date_bin(size: Expr, time: Expr) -> Expr {
    let arg = |e| FunctionArg::Unnamed(FunctionArgExpr::Expr(e));
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new("date_bin")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![arg(size), arg(time)],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn binary(left: Expr, op: BinaryOperator, right: Expr) -> Expr {
    // Nested, so that the text of the rewritten statement (EXPLAIN's) reads as it is planned.
    Expr::Nested(Box::new(Expr::BinaryOp { left: Box::new(left), op, right: Box::new(right) }))
}

/// What a window function's call is written as in DataFusion.
fn rewritten(f: &Function, rewrite: Rewrite) -> Result<Expr, GroupWindowError> {
    let (time, size) = arguments(f)?;
    let start = date_bin(size.clone(), time);
    Ok(match rewrite {
        Rewrite::Start => start,
        Rewrite::End => binary(start, BinaryOperator::Plus, size),
        Rewrite::Rowtime => {
            let ms = Expr::Interval(Interval {
                value: Box::new(Expr::value(Value::SingleQuotedString("1 millisecond".into()))),
                leading_field: None,
                leading_precision: None,
                last_field: None,
                fractional_seconds_precision: None,
            });
            binary(binary(start, BinaryOperator::Plus, size), BinaryOperator::Minus, ms)
        }
    })
}

/// Rewrites every window function's call, innermost first.
struct Rewriter;

impl VisitorMut for Rewriter {
    type Break = GroupWindowError;

    /// Names an unnamed result column that is a window function's call after its text,
    /// before the call is rewritten.
    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<Self::Break> {
        for item in &mut select.projection {
            let SelectItem::UnnamedExpr(expr) = item else { continue };
            let Expr::Function(f) = &*expr else { continue };
            match window_function(f) {
                Ok(Some(_)) => {
                    let alias = Ident::with_quote('"', expr.to_string());
                    *item = SelectItem::ExprWithAlias { expr: expr.clone(), alias };
                }
                Ok(None) => {}
                Err(e) => return ControlFlow::Break(e),
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
        let Expr::Function(f) = &*expr else { return ControlFlow::Continue(()) };
        let done = window_function(f).and_then(|r| r.map(|r| rewritten(f, r)).transpose());
        match done {
            Ok(Some(new)) => *expr = new,
            Ok(None) => {}
            Err(e) => return ControlFlow::Break(e),
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::parser::DFParser;

    /// `sql` rewritten, as text.
    fn rewritten(sql: &str) -> Result<String, GroupWindowError> {
        refuse_table_function(sql)?;
        let mut statements = DFParser::parse_sql(sql).unwrap();
        let mut statement = statements.pop_front().unwrap();
        rewrite(&mut statement)?;
        Ok(statement.to_string())
    }

    fn refused(sql: &str) -> String {
        match rewritten(sql) {
            Ok(text) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn tumble_and_its_start_become_date_bin_and_its_end_adds_the_size() {
        let sql = "SELECT TUMBLE_START(\"timestamp\", INTERVAL '1' MINUTE) AS window_start, \
                   tumble_end(\"timestamp\", INTERVAL '1' MINUTE) AS window_end, postcode, COUNT(*) AS views \
                   FROM kafka.page_views GROUP BY TUMBLE(\"timestamp\", INTERVAL '1' MINUTE), postcode";
        assert_eq!(
            rewritten(sql).unwrap(),
            "SELECT date_bin(INTERVAL '1' MINUTE, \"timestamp\") AS window_start, \
             (date_bin(INTERVAL '1' MINUTE, \"timestamp\") + INTERVAL '1' MINUTE) AS window_end, postcode, \
             COUNT(*) AS views FROM kafka.page_views \
             GROUP BY date_bin(INTERVAL '1' MINUTE, \"timestamp\"), postcode"
        );
    }

    #[test]
    fn the_rowtime_is_the_last_millisecond_of_the_window() {
        assert_eq!(
            rewritten("SELECT TUMBLE_ROWTIME(ts, INTERVAL '5' SECOND) AS t FROM x GROUP BY 1").unwrap(),
            "SELECT ((date_bin(INTERVAL '5' SECOND, ts) + INTERVAL '5' SECOND) - INTERVAL '1 millisecond') AS t \
             FROM x GROUP BY 1"
        );
    }

    #[test]
    fn an_unnamed_window_column_is_named_as_written() {
        assert_eq!(
            rewritten("SELECT TUMBLE_END(ts, INTERVAL '1' HOUR), count(*) FROM x GROUP BY TUMBLE(ts, INTERVAL '1' HOUR)")
                .unwrap(),
            "SELECT (date_bin(INTERVAL '1' HOUR, ts) + INTERVAL '1' HOUR) AS \"TUMBLE_END(ts, INTERVAL '1' HOUR)\", \
             count(*) FROM x GROUP BY date_bin(INTERVAL '1' HOUR, ts)"
        );
    }

    #[test]
    fn windows_are_rewritten_in_subqueries_and_under_explain() {
        let sql = "EXPLAIN SELECT * FROM (SELECT TUMBLE_START(ts, INTERVAL '1' MINUTE) AS w, count(*) AS n \
                   FROM x GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)) WHERE n > 1";
        let text = rewritten(sql).unwrap();
        assert!(text.starts_with("EXPLAIN "), "{text}");
        assert!(!text.to_ascii_uppercase().contains("TUMBLE"), "{text}");
        assert_eq!(text.matches("date_bin(INTERVAL '1' MINUTE, ts)").count(), 2, "{text}");
    }

    #[test]
    fn statements_without_windows_are_left_as_they_are() {
        let sql = "SELECT date_bin(INTERVAL '1 minute', \"timestamp\") AS w, tumble FROM t GROUP BY 1, 2";
        assert_eq!(rewritten(sql).unwrap(), sql);
        assert_eq!(rewritten("SELECT 'TABLE(TUMBLE(' AS s").unwrap(), "SELECT 'TABLE(TUMBLE(' AS s");
    }

    #[test]
    fn other_windows_are_refused_with_what_to_write() {
        for sql in [
            "SELECT count(*) FROM t GROUP BY HOP(ts, INTERVAL '1' MINUTE, INTERVAL '5' MINUTE)",
            "SELECT SESSION_START(ts, INTERVAL '1' MINUTE) FROM t GROUP BY SESSION(ts, INTERVAL '1' MINUTE)",
        ] {
            let e = refused(sql);
            assert!(
                e.contains("windows are tumbling") && e.contains("hint: group by a tumbling window"),
                "{e}"
            );
        }
        let e = refused(
            "SELECT TUMBLE_PROCTIME(ts, INTERVAL '1' MINUTE) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE)",
        );
        assert!(e.contains("TUMBLE_PROCTIME(…) is not supported") && e.contains("TUMBLE_END"), "{e}");
    }

    #[test]
    fn the_windowing_table_functions_are_refused_with_the_group_by_to_write() {
        for sql in [
            "SELECT * FROM TABLE(TUMBLE(TABLE page_views, DESCRIPTOR(\"timestamp\"), INTERVAL '1' MINUTES))",
            "SELECT * FROM table (\n hop(DATA => TABLE t, TIMECOL => DESCRIPTOR(ts), SLIDE => INTERVAL '1' MINUTE))",
        ] {
            let e = refused(sql);
            assert!(e.contains("there are no windowing table functions"), "{e}");
            assert!(e.contains("hint: group by a tumbling window instead: GROUP BY TUMBLE("), "{e}");
        }
    }

    #[test]
    fn a_window_function_with_other_arguments_says_how_it_is_called() {
        for sql in [
            "SELECT count(*) FROM t GROUP BY TUMBLE(ts)",
            "SELECT count(*) FROM t GROUP BY TUMBLE(ts, 60000)",
            "SELECT count(*) FROM t GROUP BY TUMBLE(ts, INTERVAL '1' MINUTE, TIME '00:00:10')",
            "SELECT count(*) FROM t GROUP BY TUMBLE(DISTINCT ts, INTERVAL '1' MINUTE)",
        ] {
            let e = refused(sql);
            assert!(
                e.contains("TUMBLE takes the event time and the window's size as an interval"),
                "{sql}: {e}"
            );
        }
    }
}
