import ArgumentParser
import Cluster
import Logging

/// `--log-level`, shared by the commands that log; sets up the one line handler (LineLogHandler).
struct LogOptions: ParsableArguments {
    @Option(help: "The least severe level logged: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    func bootstrap() { LineLogHandler.bootstrap(level: logLevel) }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
