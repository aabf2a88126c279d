import CFuzzDriver
import Foundation

/// `charter-fuzz TARGET FILE...` runs a target over files (a seed corpus), so the corpora are
/// replayed in every test run; `charter-fuzz seeds DIR` writes the model-file seeds. Built by
/// scripts/fuzz.sh (-sanitize=fuzzer -D FUZZING), it hands over to libFuzzer instead.
@main
struct Entry {
    static func main() throws {
        #if FUZZING
        exit(charter_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv) { bytes, count in
            FuzzTarget.selected.run(bytes.map { Data(bytes: $0, count: count) } ?? Data())
            return 0
        })
        #else
        let args = CommandLine.arguments.dropFirst()
        if args.first == "seeds", let dir = args.dropFirst().first { return try Seeds.write(into: URL(fileURLWithPath: dir)) }
        guard let name = args.first, let target = FuzzTarget(rawValue: name) else {
            print("usage: charter-fuzz TARGET FILE... (targets: \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")))")
            exit(2)
        }
        var count = 0
        for path in args.dropFirst() {
            guard let data = FileManager.default.contents(atPath: path) else { print("cannot read \(path)"); exit(2) }
            target.run(data)
            count += 1
        }
        print("\(name): \(count) inputs, no crash")
        #endif
    }
}
