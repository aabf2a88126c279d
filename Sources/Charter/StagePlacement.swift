import Alignment
import ArgumentParser

/// Where a stage computes and how it treats its output folder: the options every command built on
/// stages shares (`charter stage`, `charter revise`).
struct StagePlacement: ParsableArguments {
    @Option(help: "Worker processes to start on this machine (0: only those that connect to --bind).") var workers = 2
    @Option(help: "Control endpoint to bind for workers started by hand or by a cluster.") var bind = "tcp://127.0.0.1:*"
    @Option(help: "Items per task (default: about two tasks per worker, at most 16 items each).") var itemsPerTask: Int?
    @Flag(help: "Compute every item in this process: no coordinator, no workers.") var inProcess = false
    @Flag(help: "Keep the items already in the output and run only the others.") var resume = false
    @Flag(help: "Empty an output folder that already holds a stage, and start again.") var overwrite = false
    @OptionGroup var metrics: MetricsOptions
    @OptionGroup var logging: LogOptions

    func validate() throws {
        if workers < 0 { throw ValidationError("--workers must be 0 or more") }
        if let n = itemsPerTask, n < 1 { throw ValidationError("--items-per-task must be at least 1") }
    }

    func start() throws -> RunStart { try RunStart(resume: resume, overwrite: overwrite) }
}
