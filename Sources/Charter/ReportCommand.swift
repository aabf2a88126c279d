import ArgumentParser
import Foundation

/// `charter report RUN`: one self-contained HTML page about a `charter train` run (docs/train.md).
struct ReportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "report", abstract: "Write RUN/report.html: stage times, win rates, training curves, labeler statistics, samples of a charter train run.")

    @Argument(help: ArgumentHelp("The run folder (run.dir of the configuration).", valueName: "RUN")) var folder: String
    @Option(help: "Where to write the page (default RUN/report.html).") var out: String?

    func run() throws {
        let run = URL(fileURLWithPath: folder).standardized.path
        let page = try RunReport(folder: run).html()
        let path = out ?? "\(run)/report.html"
        do { try Data(page.utf8).write(to: URL(fileURLWithPath: path), options: .atomic) } catch {
            throw CLIError("cannot write \(path): \(error.localizedDescription)")
        }
        print("report: \(path)")
    }
}
