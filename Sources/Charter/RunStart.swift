import Alignment
import ArgumentParser

extension RunStart {
    /// From a command's --resume and --overwrite flags.
    init(resume: Bool, overwrite: Bool) throws {
        if resume && overwrite { throw ValidationError("--resume and --overwrite exclude each other") }
        self = resume ? .resume : overwrite ? .overwrite : .fresh
    }
}
