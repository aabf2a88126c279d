import CCRC32C
import Foundation

/// A run's metrics as TensorBoard event files (`tensorboard --logdir RUN` draws them): the TFRecord
/// framing (length, masked CRC-32C of the length, an `Event` protobuf, masked CRC-32C of it) with
/// one scalar summary per number of each metrics line. The folder mirrors metrics.jsonl: opening
/// replaces earlier event files with the lines the run keeps (a resumed run drops the iterations
/// after its checkpoint from the JSONL, and so from here), then each new line is appended.
public final class TensorBoardEvents {
    public let file: URL
    let handle: FileHandle

    /// `lines`: the metrics lines kept so far. Keys named `iteration` or `step` give the step.
    public init(folder: URL, replaying lines: [String] = []) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: folder, withIntermediateDirectories: true)
        for old in (try? fm.contentsOfDirectory(atPath: folder.path)) ?? [] where old.hasPrefix("events.out.tfevents.") {
            try fm.removeItem(at: folder.appendingPathComponent(old))
        }
        let now = Date().timeIntervalSince1970
        file = folder.appendingPathComponent("events.out.tfevents.\(Int(now)).\(ProcessInfo.processInfo.hostName).\(getpid())")
        guard fm.createFile(atPath: file.path, contents: nil), let h = FileHandle(forWritingAtPath: file.path) else {
            throw FormatError("\(file.path): cannot create the TensorBoard event file")
        }
        handle = h
        try write(Self.contents(lines, now: now))
    }

    /// A whole event file of these metrics lines. Training runs (sft, dpo, rm train), whose folder
    /// is replaced at each checkpoint, write it with the checkpoint, as `fileName` in `folderName`.
    public static func contents(_ lines: [String], now: Double = Date().timeIntervalSince1970) -> Data {
        var version = ProtobufWriter()
        version.double(1, now)
        version.bytes(3, Data("brain.Event:2".utf8))
        var data = record(version.data)
        for line in lines { data += event(jsonLine: line, now: now).map(record) ?? Data() }
        return data
    }

    public static let folderName = "tensorboard"
    public static let fileName = "events.out.tfevents.0.charter"

    deinit { try? handle.close() }

    /// One metrics line (a JSON object); lines without a step or a number add nothing.
    public func append(jsonLine: String) throws {
        if let e = Self.event(jsonLine: jsonLine, now: Date().timeIntervalSince1970) { try write(Self.record(e)) }
    }

    func write(_ data: Data) throws {
        do { try handle.write(contentsOf: data) } catch { throw FormatError("\(file.path): cannot write (\(error.localizedDescription))") }
    }

    /// The Event of a metrics line: its numbers as scalars tagged by key, at the line's step and time.
    static func event(jsonLine: String, now: Double) -> Data? {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(jsonLine.utf8))) as? [String: Any],
              let step = (object["iteration"] ?? object["step"]).flatMap(JSONValue.number), step.isFinite else { return nil }
        var summary = ProtobufWriter()
        for (tag, value) in object.sorted(by: { $0.key < $1.key }) where tag != "iteration" && tag != "step" {
            guard let x = JSONValue.number(value) else { continue }
            var v = ProtobufWriter()
            v.bytes(1, Data(tag.utf8))
            v.float(2, Float(x))
            summary.bytes(1, v.data)
        }
        guard !summary.data.isEmpty else { return nil }
        let time = (object["time"] as? String).flatMap { ISO8601DateFormatter().date(from: $0) }?.timeIntervalSince1970 ?? now
        var e = ProtobufWriter()
        e.double(1, time)
        e.varint(2, UInt64(bitPattern: Int64(step)))
        e.bytes(5, summary.data)
        return e.data
    }

    static func record(_ data: Data) -> Data {
        var length = UInt64(data.count).littleEndian
        let lengthBytes = withUnsafeBytes(of: &length) { Data($0) }
        return lengthBytes + le32(maskedCRC(lengthBytes)) + data + le32(maskedCRC(data))
    }

    /// TFRecord's mask: a CRC of data that holds CRCs is itself less likely to look like one.
    static func maskedCRC(_ data: Data) -> UInt32 {
        let crc = data.withUnsafeBytes { charter_crc32c(0, $0.baseAddress, $0.count) }
        return ((crc >> 15) | (crc << 17)) &+ 0xA282_EAD8
    }

    static func le32(_ x: UInt32) -> Data { withUnsafeBytes(of: x.littleEndian) { Data($0) } }
}

/// The few protobuf encodings an Event needs (fields of wire types 0, 1, 2 and 5).
struct ProtobufWriter {
    var data = Data()

    mutating func key(_ field: Int, _ wireType: Int) { raw(UInt64(field << 3 | wireType)) }

    mutating func raw(_ value: UInt64) {
        var v = value
        while v >= 0x80 { data.append(UInt8(v & 0x7F) | 0x80); v >>= 7 }
        data.append(UInt8(v))
    }

    mutating func varint(_ field: Int, _ value: UInt64) { key(field, 0); raw(value) }
    mutating func double(_ field: Int, _ value: Double) { key(field, 1); withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
    mutating func bytes(_ field: Int, _ value: Data) { key(field, 2); raw(UInt64(value.count)); data.append(value) }
    mutating func float(_ field: Int, _ value: Float) { key(field, 5); withUnsafeBytes(of: value.bitPattern.littleEndian) { data.append(contentsOf: $0) } }
}
