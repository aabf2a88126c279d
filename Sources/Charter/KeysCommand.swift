import ArgumentParser
import Foundation
import ZeroMQ

struct KeysCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Make a CURVE key pair: PREFIX.key (secret, mode 600) and PREFIX.pub (public).")

    @Option(help: "Path prefix of the two files.") var out: String

    func run() throws {
        let pair = try CurveKeyPair.generate()
        let secret = out + ".key", pub = out + ".pub"
        // Created readable by the owner only from the start, and never over an existing key.
        let fd = open(secret, O_WRONLY | O_CREAT | O_EXCL, 0o600)
        guard fd >= 0 else { throw CLIError("cannot create \(secret): \(String(cString: strerror(errno)))") }
        let line = Array((pair.secretKey + "\n").utf8)
        let written = write(fd, line, line.count)
        close(fd)
        guard written == line.count else { throw CLIError("cannot write \(secret)") }
        try Data((pair.publicKey + "\n").utf8).write(to: URL(fileURLWithPath: pub))
        print("keys: secret \(secret), public \(pub): \(pair.publicKey)")
    }
}

/// CURVE keys as the command line takes them: files of Z85 text (40 characters a key).
enum CurveKeys {
    /// The keys in a file, one per line, optionally after a label (`worker1 <key>`); blank lines and
    /// # comment lines are skipped (# is also a Z85 character, so a line that is a valid key is a
    /// key, and a comment cannot follow a key).
    static func read(_ path: String, what: String) throws -> [String] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError("\(what) \(path): cannot read") }
        var keys: [String] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let whole = raw.trimmingCharacters(in: .whitespaces)
            func isZ85Key(_ s: String) -> Bool { s.utf8.count == 40 && (try? CurveKeyPair.publicKey(for: s)) != nil }
            // A key alone, or a label, whitespace, then the key.
            let last = whole.split(whereSeparator: { $0 == " " || $0 == "\t" }).last.map(String.init) ?? ""
            let line = isZ85Key(whole) ? whole : last
            let isKey = isZ85Key(line)
            if !isKey && (whole.isEmpty || whole.hasPrefix("#")) { continue }
            guard isKey else {
                throw CLIError("\(what) \(path) line \(n + 1): not a 40-character Z85 CURVE key")
            }
            keys.append(line)
        }
        if keys.isEmpty { throw CLIError("\(what) \(path): no key in it") }
        return keys
    }

    /// A file holding exactly one key.
    static func one(_ path: String, what: String) throws -> String {
        let keys = try read(path, what: what)
        guard keys.count == 1 else { throw CLIError("\(what) \(path): holds \(keys.count) keys, expected one") }
        return keys[0]
    }

    /// A secret key file; the public half of a pair (`charter keys` names it .pub) is refused, since
    /// both are 40 Z85 characters and a mix-up would otherwise only show as a refused handshake.
    static func secret(_ path: String) throws -> String {
        if path.hasSuffix(".pub") { throw CLIError("secret key file \(path) is a public key file (.pub); give the .key file `charter keys` wrote beside it") }
        return try one(path, what: "secret key file")
    }

    static func pair(secretFile: String) throws -> CurveKeyPair {
        let secret = try secret(secretFile)
        return CurveKeyPair(publicKey: try CurveKeyPair.publicKey(for: secret), secretKey: secret)
    }
}
