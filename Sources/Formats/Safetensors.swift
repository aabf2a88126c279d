import Engine
import Foundation
import Tokenizer

/// A safetensors file, read from a memory map.
///
/// Byte layout:
///  1. u64 little-endian N: the length of the header
///  2. N bytes of UTF-8 JSON: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
///     ..., "__metadata__": {string: string}} (offsets relative to the data section)
///  3. the data section: every tensor row-major, little-endian, at its offsets
///
/// The header length, every tensor's offsets and its byte count (shape x dtype size) are checked
/// against the file before any tensor is read, and, as the safetensors library requires, the
/// tensors must tile the data section exactly: no overlap, no gap, nothing after the last one (so a
/// header length off by one, which shifts every tensor, is caught).
public struct SafetensorsFile {
    public struct Tensor: Equatable, Sendable {
        public let name: String
        public let dtype: String
        public let shape: [Int]
        let begin: Int, end: Int
        public var count: Int { shape.reduce(1, *) }
    }

    public let tensors: [String: Tensor]
    public let metadata: [String: String]
    let data: Data
    let dataStart: Int

    static let dtypeSizes = ["F64": 8, "F32": 4, "F16": 2, "BF16": 2]

    public init(url: URL) throws(FormatError) {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw FormatError("safetensors \(url.lastPathComponent): cannot read: \(error.localizedDescription)")
        }
        try self.init(data: data, name: url.lastPathComponent)
    }

    public init(data: Data, name: String = "<memory>") throws(FormatError) {
        func fail(_ s: String) -> FormatError { FormatError("safetensors \(name): \(s)") }
        guard data.count >= 8 else { throw fail("header length at byte 0: needs 8 bytes, the file has \(data.count)") }
        let n = data.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        guard n <= UInt64(data.count - 8) else { throw fail("header length at byte 0: \(n) bytes, only \(data.count - 8) follow; truncated?") }
        let headerEnd = 8 + Int(n)
        guard let json = try? JSONSerialization.jsonObject(with: data[data.startIndex + 8 ..< data.startIndex + headerEnd]),
              let header = json as? [String: Any] else { throw fail("header at byte 8: not a JSON object") }
        var tensors: [String: Tensor] = [:]
        var metadata: [String: String] = [:]
        for (key, value) in header {
            if key == "__metadata__" {
                metadata = (value as? [String: String]) ?? [:]
                continue
            }
            guard let info = value as? [String: Any], let dtype = info["dtype"] as? String,
                  let shape = info["shape"] as? [Int], let offsets = info["data_offsets"] as? [Int], offsets.count == 2 else {
                throw fail("tensor \(shown(key)): needs dtype, shape and data_offsets")
            }
            guard let size = Self.dtypeSizes[dtype] else { throw fail("tensor \(shown(key)): dtype \(shown(dtype)) is not supported (F64, F32, F16, BF16)") }
            guard shape.count <= 8, shape.allSatisfy({ $0 >= 0 && $0 < 1 << 40 }) else { throw fail("tensor \(shown(key)): absurd shape \(shape.prefix(8))") }
            var (bytes, overflow) = (size, false)
            for d in shape where !overflow { (bytes, overflow) = bytes.multipliedReportingOverflow(by: d) }
            let (begin, end) = (offsets[0], offsets[1])
            guard !overflow, begin >= 0, end >= begin, end - begin == bytes else {
                throw fail("tensor \(shown(key)): offsets \(offsets) do not hold \(shape) of \(dtype)")
            }
            guard end <= data.count - headerEnd else {
                throw fail("tensor \(shown(key)): data ends at byte \(headerEnd + end), the file has \(data.count); truncated?")
            }
            tensors[key] = Tensor(name: key, dtype: dtype, shape: shape, begin: begin, end: end)
        }
        var end = 0
        for t in tensors.values.sorted(by: { ($0.begin, $0.end) < ($1.begin, $1.end) }) {
            guard t.begin == end else {
                throw fail(t.begin < end ? "tensor \(shown(t.name)) at data offset \(t.begin) overlaps the tensor before it, which ends at \(end)"
                                         : "data offsets \(end)..<\(t.begin) belong to no tensor")
            }
            end = t.end
        }
        guard end == data.count - headerEnd else {
            throw fail("the tensors end at data offset \(end), but the data section has \(data.count - headerEnd) bytes; header length wrong?")
        }
        self.tensors = tensors
        self.metadata = metadata
        self.data = data
        self.dataStart = headerEnd
    }

    /// Converts a tensor to float32 into `out` (`tensor.count` floats).
    public func read(_ t: Tensor, into out: UnsafeMutablePointer<Float>) {
        data.withUnsafeBytes { raw in
            let p = raw.baseAddress! + dataStart + t.begin
            switch t.dtype {
            case "F64": for i in 0..<t.count { out[i] = Float(Double(bitPattern: UInt64(littleEndian: p.loadUnaligned(fromByteOffset: 8 * i, as: UInt64.self)))) }
            case "F32": for i in 0..<t.count { out[i] = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
            case "F16": for i in 0..<t.count { out[i] = Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)))) }
            default: for i in 0..<t.count { out[i] = BFloat16(bits: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))).float }
            }
        }
    }

    public func floats(_ name: String) -> [Float]? {
        guard let t = tensors[name] else { return nil }
        return [Float](unsafeUninitializedCapacity: t.count) { buf, n in read(t, into: buf.baseAddress!); n = t.count }
    }

    /// Doubles, for references stored in F64.
    public func doubles(_ name: String) -> [Double]? {
        guard let t = tensors[name], t.dtype == "F64" else { return nil }
        return data.withUnsafeBytes { raw in
            (0..<t.count).map { Double(bitPattern: UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: dataStart + t.begin + 8 * $0, as: UInt64.self))) }
        }
    }

    /// How float32 values are stored: as they are, or rounded to half the bytes.
    public enum StorageType: String, CaseIterable, Sendable {
        case f32 = "F32", f16 = "F16", bf16 = "BF16"
        var size: Int { self == .f32 ? 4 : 2 }
        /// The name config.json's torch_dtype gives it.
        public var torchName: String { ["F32": "float32", "F16": "float16", "BF16": "bfloat16"][rawValue]! }
    }

    /// Writes float32 tensors (in the given order) with optional metadata, stored as `type`.
    public static func encode(_ tensors: [(name: String, shape: [Int], values: UnsafeBufferPointer<Float>)],
                              metadata: [String: String] = [:], as type: StorageType = .f32) -> Data {
        var header: [String: Any] = [:]
        if !metadata.isEmpty { header["__metadata__"] = metadata }
        var offset = 0
        for t in tensors {
            header[t.name] = ["dtype": type.rawValue, "shape": t.shape, "data_offsets": [offset, offset + type.size * t.values.count]] as [String: Any]
            offset += type.size * t.values.count
        }
        var json = try! JSONSerialization.data(withJSONObject: header, options: [.sortedKeys])
        while (8 + json.count) % 8 != 0 { json.append(UInt8(ascii: " ")) } // keeps the data 8-byte aligned
        var out = Data(capacity: 8 + json.count + offset)
        withUnsafeBytes(of: UInt64(json.count).littleEndian) { out.append(contentsOf: $0) }
        out.append(json)
        for t in tensors { // little-endian hosts only
            switch type {
            case .f32: out.append(contentsOf: UnsafeRawBufferPointer(t.values))
            case .f16: t.values.map { Float16($0).bitPattern }.withUnsafeBytes { out.append(contentsOf: $0) }
            case .bf16: t.values.map { BFloat16($0).bits }.withUnsafeBytes { out.append(contentsOf: $0) }
            }
        }
        return out
    }
}

/// A problem with a model or data file, said in one line.
public struct FormatError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
