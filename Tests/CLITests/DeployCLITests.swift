import Foundation
import XCTest

/// deploy/k8s checked offline against Kubernetes' own schemas (PyPI kubernetes-validate); no cluster
/// is started here.
extension CLITests {
    /// Any program, from the package folder: its status and its stdout and stderr together.
    func run(_ executable: String, _ args: [String], environment: [String: String] = [:]) throws -> (status: Int32, out: String) {
        let r = try tool(executable, args, environment: environment, together: true)
        return (r.status, r.out)
    }

    func testKubernetesManifestsValidate() throws {
        let validate = Self.root.path + "/.ops/venv/bin/kubernetes-validate"
        guard FileManager.default.isExecutableFile(atPath: validate) else { throw XCTSkip("no \(validate): run scripts/setup-ops.sh") }
        let k8s = Self.root.path + "/deploy/k8s"
        let kustomization = try String(contentsOfFile: k8s + "/kustomization.yaml", encoding: .utf8)
        // The resources the kustomization lists, and no manifest it forgets.
        let listed = kustomization.split(separator: "\n").compactMap { line -> String? in
            let t = line.trimmingCharacters(in: .whitespaces)
            return t.hasPrefix("- ") && t.hasSuffix(".yaml") ? String(t.dropFirst(2)) : nil
        }
        let present = try FileManager.default.contentsOfDirectory(atPath: k8s).filter { $0.hasSuffix(".yaml") && $0 != "kustomization.yaml" && $0 != "run.yaml" }
        XCTAssertEqual(Set(listed), Set(present), "every manifest in deploy/k8s is in kustomization.yaml")
        XCTAssertTrue(kustomization.contains("files: [run.yaml]"))

        var files = listed.map { "deploy/k8s/" + $0 }
        if let kubectl = ["/usr/bin/kubectl", "/usr/local/bin/kubectl"].first(where: FileManager.default.isExecutableFile) {
            let rendered = try run(kubectl, ["kustomize", "deploy/k8s"])
            XCTAssertEqual(rendered.status, 0, rendered.out)
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("charter-k8s-\(UUID()).yaml")
            try Data(rendered.out.utf8).write(to: path)
            addTeardownBlock { try? FileManager.default.removeItem(at: path) }
            files = [path.path]
        }
        let checked = try run(validate, ["--strict", "-k", "1.30.0"] + files)
        XCTAssertEqual(checked.status, 0, checked.out)
        for name in ["persistentvolumeclaim/charter-run", "service/charter-coordinator", "job/charter-coordinator", "job/charter-workers"] {
            XCTAssertTrue(checked.out.contains("passed for resource \(name)"), checked.out)
        }
        // The validator is not a check that cannot fail: a misspelt field is refused.
        let bad = FileManager.default.temporaryDirectory.appendingPathComponent("charter-k8s-bad-\(UUID()).yaml")
        try Data(try String(contentsOfFile: k8s + "/workers-job.yaml", encoding: .utf8)
            .replacingOccurrences(of: "containerPort:", with: "containerPorts:").utf8).write(to: bad)
        addTeardownBlock { try? FileManager.default.removeItem(at: bad) }
        XCTAssertNotEqual(try run(validate, ["--strict", bad.path]).status, 0)
    }
}
