//! The Java reference clients (`tests/java`: Apache Kafka's kafka-clients and Apache Avro's own
//! single-object encoding over the `.avsc` files, nothing generated from this code) on the real broker:
//! a RunRequested published from Java is run by our orchestrator on real agents, and every event on
//! the results topic decodes in Java with the fields and deterministic ids the contract promises.

mod common;

use std::process::Command;

use common::cluster::*;
use common::*;

fn interop(args: &[&str]) -> std::process::Output {
    let script = chaoseater_schemas::package_dir!().join("tests/java/interop.sh");
    run(Command::new("bash").arg(script).args(args))
}

#[test]
fn a_run_published_from_java_completes_and_java_decodes_every_result() {
    let mut c = Cluster::new("java");
    c.region("eu-west", "127.0.0.2", 2, "");
    c.region("us-east", "127.0.0.3", 1, "");
    c.serve("ledger,orchestrator,dispatcher");
    let avro = chaoseater_schemas::package_dir!().join("schemas/avro");
    let avro = avro.to_str().expect("path");
    let run_id = "java-run-1";

    let out = interop(&["publish", &c.brokers, &c.prefix, avro, run_id, "eu-west,us-east"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("published RunRequested java-run-1"), "{}", text(&out.stdout));

    let out = interop(&["verify", &c.brokers, &c.prefix, avro, run_id, "eu-west,us-east"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("2 RegionResult, RunCompleted COMPLETED"), "{stdout}");
    println!("{}", stdout.trim());

    // Our side agrees: the run the Java client asked for, as the ledger filed it.
    let completed = c.results("RunCompleted");
    assert_eq!(completed.iter().filter(|e| e["run_id"] == run_id).count(), 1, "{completed:?}");
    let out = c.run(&["status", run_id]);
    assert!(text(&out.stdout).contains("COMPLETED"), "{}\n{}", text(&out.stdout), text(&out.stderr));
}
