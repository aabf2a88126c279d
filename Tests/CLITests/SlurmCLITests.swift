import Foundation
import XCTest

/// deploy/slurm/charter.sbatch through a real one-node Slurm (slurmctld, slurmd, munge), started by
/// scripts/slurm-one-node.sh for the test and stopped after it.
extension CLITests {
    func testSlurmBatchJobRunsTheCoordinatorAndTwoWorkersAndResumes() throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/sbatch"), getuid() == 0 else {
            throw XCTSkip("needs root and Debian's slurm-wlm and munge (scripts/setup-ops.sh)")
        }
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("charter-slurm-\(UUID())")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        addTeardownBlock { try? FileManager.default.removeItem(at: dir) }
        func sh(_ args: [String], environment: [String: String] = [:]) throws -> (Int32, String) {
            let r = try run("/usr/bin/env", args, environment: environment)
            return (r.status, r.out)
        }
        let cluster = dir.appendingPathComponent("slurm").path
        let up = try sh(["bash", "scripts/slurm-one-node.sh", "start", cluster])
        defer { _ = try? sh(["bash", "scripts/slurm-one-node.sh", "stop", cluster]) }
        XCTAssertEqual(up.0, 0, up.1 + ((try? String(contentsOfFile: cluster + "/log/slurmctld.log", encoding: .utf8)) ?? ""))
        guard up.0 == 0 else { return }

        // examples/tiny.yaml with its run folder and prompts as absolute paths (storage every node sees).
        let example = try String(contentsOfFile: Self.root.path + "/examples/tiny.yaml", encoding: .utf8)
        let config = example.replacingOccurrences(of: "dir: ../runs/tiny", with: "dir: \(dir.path)/run")
            .replacingOccurrences(of: "prompts: prompts.jsonl", with: "prompts: \(Self.root.path)/examples/prompts.jsonl")
            .replacingOccurrences(of: "iterations: 8", with: "iterations: 3")
        try Data(config.utf8).write(to: dir.appendingPathComponent("tiny.yaml"))
        let environment = ["SLURM_CONF": cluster + "/slurm.conf", "CHARTER": Self.binary.path, "CHARTER_PORT": String(try freeLoopbackPort())]
        func submit(_ log: String) throws -> (Int32, String) {
            // Three tasks on a two-CPU node: --overcommit lets them share the CPUs.
            let r = try sh(["timeout", "240", "sbatch", "--wait", "--nodes=1", "--ntasks=3", "--overcommit", "--output=\(dir.path)/\(log)",
                            "deploy/slurm/charter.sbatch", dir.path + "/tiny.yaml"], environment: environment)
            return (r.0, r.1 + ((try? String(contentsOfFile: "\(dir.path)/\(log)", encoding: .utf8)) ?? ""))
        }
        let first = try submit("job.log")
        XCTAssertEqual(first.0, 0, first.1)
        XCTAssertTrue(first.1.contains("coordinator exited with status 0"), first.1)
        XCTAssertFalse(first.1.contains("coordinator at tcp://127.0.0.1:"), "the coordinator binds an address other nodes reach: \(first.1)")
        XCTAssertEqual(first.1.components(separatedBy: "coordinator said goodbye (run finished)").count - 1, 2, "both workers leave at the end: \(first.1)")
        let lines = try jsonLines(dir.path + "/run/metrics.jsonl")
        XCTAssertEqual(lines.compactMap { $0["iteration"] as? Int }, [0, 1, 2])
        XCTAssertEqual(lines.last?["workers_alive"] as? Int, 2, "both workers joined: \(lines)") // the first iteration starts with whoever is there
        XCTAssertTrue(lines.allSatisfy { $0["malformed_dropped"] as? Int == 0 && $0["redispatched"] as? Int == 0 }, "\(lines)")

        // Resubmitted (as a requeue would), the job resumes and finds the run complete.
        let again = try submit("job2.log")
        XCTAssertEqual(again.0, 0, again.1)
        XCTAssertTrue(again.1.contains("is complete (3 iterations); nothing to do"), again.1)
        XCTAssertEqual(try jsonLines(dir.path + "/run/metrics.jsonl").count, 3)
    }
}
