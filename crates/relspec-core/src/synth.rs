//! Synthetic workspaces for benchmarks and property tests: `n` rules in their
//! own `.sql` files over two shared CSV datasets, in chains of ten. Chain
//! heads (`i % 10 == 0`) read the datasets; links read the previous rule and
//! the `bias` param; rule 0 produces the `summary` contract.

use std::path::Path;

/// Write a workspace of `n` rules under `root`. `rows` rows of event data.
pub fn write_workspace(root: &Path, n: usize, rows: usize) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("rules"))?;
    std::fs::create_dir_all(root.join("data"))?;
    std::fs::create_dir_all(root.join("cache"))?;
    std::fs::write(
        root.join("workspace.toml"),
        r#"[workspace]
name = "synthetic"
include = ["rules/*.sql"]

[profile]
target_partitions = 2

[params]
bias = 1

[datasets.events]
path = "data/events"
format = "csv"

[datasets.kinds]
path = "data/kinds.csv"

[contracts.summary]
columns = { kind = "bigint", n = "bigint" }
"#,
    )?;
    std::fs::create_dir_all(root.join("data/events"))?;
    std::fs::write(root.join("data/events/part-0.csv"), events_csv(0, rows, 0))?;
    let mut kinds = String::from("kind,label\n");
    for k in 0..10 {
        kinds.push_str(&format!("{k},kind-{k}\n"));
    }
    std::fs::write(root.join("data/kinds.csv"), kinds)?;
    for i in 0..n {
        std::fs::write(root.join("rules").join(format!("{}.sql", rule_name(i))), rule_sql(i, 0))?;
    }
    Ok(())
}

/// CSV text of `rows` events starting at id `start`; `seed` varies the values.
pub fn events_csv(start: usize, rows: usize, seed: usize) -> String {
    let mut events = String::from("id,kind,value\n");
    for i in start..start + rows {
        events.push_str(&format!("{i},{},{}\n", i % 10, (i * 7919 + seed * 104729) % 1000));
    }
    events
}

/// Name of the i-th rule.
pub fn rule_name(i: usize) -> String {
    format!("r{i:05}")
}

/// SQL of the i-th rule; `variant` changes its meaning (for edits).
pub fn rule_sql(i: usize, variant: usize) -> String {
    if i.is_multiple_of(10) {
        format!(
            "{}-- chain head {i}\nSELECT e.kind, k.label, count(*) AS n, sum(e.value) + {variant} AS total\nFROM events AS e\nJOIN kinds AS k ON k.kind = e.kind\nWHERE e.id % {m} = {r}\nGROUP BY e.kind, k.label\n",
            if i == 0 { "-- produces: summary\n" } else { "" },
            m = 7 + i % 5,
            r = i % 3,
        )
    } else {
        format!(
            "-- chain link {i}\nSELECT kind, label, n + {variant} AS n, total + $bias AS total\nFROM {prev}\nWHERE kind <> {skip}\n",
            prev = rule_name(i - 1),
            skip = i % 10,
        )
    }
}
