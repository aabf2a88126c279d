import Foundation
import Tokenizer

/// A GGUF file (version 2 or 3), read from a memory map.
///
/// Byte layout, all little-endian:
///  1. magic "GGUF" (4 bytes), u32 version, u64 tensor count, u64 metadata count
///  2. metadata, each: key (u64 length + UTF-8), u32 value type, value. Strings are u64 length +
///     UTF-8; arrays are u32 element type + u64 count + elements (arrays may nest)
///  3. tensor infos, each: name (string), u32 dimension count, u64 extents innermost first (the
///     reverse of PyTorch order), u32 tensor type, u64 offset into the data section
///  4. padding to `general.alignment` (default 32); the data section starts there
///
/// Every length and offset is checked against the bytes left before it is used, so a truncated or
/// corrupted file gives a `GGUFError` naming the field and offset, never a crash or a huge allocation.
public struct GGUFFile {
    public let url: URL
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    public let metadataOrder: [String]
    public let tensors: [GGUFTensorInfo]
    public let dataOffset: Int
    let data: Data

    public init(url: URL) throws(GGUFError) {
        let data: Data
        do { data = try Data(contentsOf: url, options: .alwaysMapped) } catch {
            throw GGUFError(field: "file", offset: 0, problem: "cannot read \(url.path): \(error.localizedDescription)")
        }
        try self.init(data: data, url: url)
    }

    public init(data: Data, url: URL = URL(fileURLWithPath: "<memory>")) throws(GGUFError) {
        self.url = url
        self.data = data
        var r = ByteReader(data: data)
        let magic = try r.bytes(4, field: "magic")
        guard magic == Array("GGUF".utf8) else {
            throw GGUFError(field: "magic", offset: 0, problem: "expected \"GGUF\", found bytes \(magic.map { String(format: "%02x", $0) }.joined(separator: " ")); not a GGUF file")
        }
        version = try r.u32(field: "version")
        guard version == 2 || version == 3 else {
            throw GGUFError(field: "version", offset: 4, problem: "version \(version) is not supported (2 or 3)")
        }
        let tensorCount = try r.count(field: "tensor count", minimumBytesEach: 4 + 8 + 4 + 4 + 8)
        let kvCount = try r.count(field: "metadata count", minimumBytesEach: 8 + 4 + 1)

        var meta: [String: GGUFValue] = [:], order: [String] = []
        for i in 0..<kvCount {
            let key = try r.string(field: "metadata[\(i)] key")
            let typeOffset = r.offset
            let type = try r.u32(field: "metadata \(shown(key)) type")
            let value = try r.value(type: type, typeOffset: typeOffset, field: "metadata \(shown(key))", depth: 0)
            if meta.updateValue(value, forKey: key) != nil {
                throw GGUFError(field: "metadata \(shown(key))", offset: typeOffset, problem: "key appears twice")
            }
            order.append(key)
        }
        metadata = meta
        metadataOrder = order

        var infos: [GGUFTensorInfo] = []
        for i in 0..<tensorCount {
            let name = try r.string(field: "tensor[\(i)] name")
            let field = "tensor \(shown(name))"
            let dimsOffset = r.offset
            let dims = Int(try r.u32(field: "\(field) dimension count"))
            guard (1...4).contains(dims) else {
                throw GGUFError(field: "\(field) dimension count", offset: dimsOffset, problem: "expected 1 to 4, found \(dims)")
            }
            var extents: [Int] = []
            var elements = 1
            for d in 0..<dims {
                let at = r.offset
                let e = try r.u64(field: "\(field) extent \(d)")
                let (product, overflow) = elements.multipliedReportingOverflow(by: Int(clamping: e))
                guard e > 0, e < 1 << 40, !overflow, product < 1 << 40 else {
                    throw GGUFError(field: "\(field) extent \(d)", offset: at, problem: "absurd extent \(e)")
                }
                extents.append(Int(e)); elements = product
            }
            let typeOffset = r.offset
            let rawType = try r.u32(field: "\(field) type")
            guard let type = GGMLType(rawValue: rawType) else {
                throw GGUFError(field: "\(field) type", offset: typeOffset, problem: "unknown tensor type \(rawType) (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)")
            }
            guard elements % type.blockSize == 0 else {
                throw GGUFError(field: "\(field) extents", offset: dimsOffset, problem: "\(elements) elements is not a whole number of \(type) blocks")
            }
            let offOffset = r.offset
            let offset = try r.u64(field: "\(field) offset")
            infos.append(GGUFTensorInfo(name: name, extents: extents, type: type, offset: Int(clamping: offset),
                                        byteCount: elements / type.blockSize * type.blockBytes, infoOffset: offOffset))
        }

        var alignment = 32
        if let a = meta["general.alignment"] {
            guard let v = a.int, v > 0, v & (v - 1) == 0, v <= 1 << 16 else {
                throw GGUFError(field: "metadata \"general.alignment\"", offset: 0, problem: "must be a power of two, found \(a)")
            }
            alignment = v
        }
        dataOffset = (r.offset + alignment - 1) / alignment * alignment
        // Tensors follow each other in the order of their infos, each padded to the alignment (as
        // llama.cpp requires): a tensor whose type or extents were changed no longer ends where
        // the next begins.
        var expected = 0
        for t in infos {
            guard t.offset == expected else {
                throw GGUFError(field: "tensor \(shown(t.name)) offset", offset: t.infoOffset,
                                problem: "offset \(t.offset), but the tensors before it end at \(expected); a wrong type or extent?")
            }
            expected += (t.byteCount + alignment - 1) / alignment * alignment
            let (end, overflow) = (dataOffset + t.offset).addingReportingOverflow(t.byteCount)
            guard !overflow, end <= data.count else {
                throw GGUFError(field: "tensor \(shown(t.name)) data", offset: t.infoOffset, problem: "needs bytes up to \(dataOffset + t.offset + t.byteCount), the file has \(data.count); truncated?")
            }
        }
        tensors = infos
    }

    public func tensor(_ name: String) -> GGUFTensorInfo? { tensors.first { $0.name == name } }

    /// Dequantizes a tensor to float32 into `out`, which must hold `info.elementCount` floats.
    public func read(_ info: GGUFTensorInfo, into out: UnsafeMutablePointer<Float>) {
        data.withUnsafeBytes { raw in
            let src = raw.baseAddress! + dataOffset + info.offset
            Dequantize.run(info.type, src: src, count: info.elementCount, into: out)
        }
    }

    public func floats(_ info: GGUFTensorInfo) -> [Float] {
        [Float](unsafeUninitializedCapacity: info.elementCount) { buf, n in
            read(info, into: buf.baseAddress!); n = info.elementCount
        }
    }

    // Typed metadata look-ups with errors that name the key.
    public func string(_ key: String) throws(GGUFError) -> String {
        guard case .string(let s)? = metadata[key] else { throw missing(key, "a string") }
        return s
    }

    public func int(_ key: String) throws(GGUFError) -> Int {
        guard let v = metadata[key]?.int else { throw missing(key, "an integer") }
        return v
    }

    public func float(_ key: String) throws(GGUFError) -> Float {
        guard let v = metadata[key]?.double else { throw missing(key, "a number") }
        return Float(v)
    }

    /// An optional key: nil when absent, an error when present with the wrong type.
    public func optionalInt(_ key: String) throws(GGUFError) -> Int? { metadata[key] == nil ? nil : try int(key) }
    public func optionalFloat(_ key: String) throws(GGUFError) -> Float? { metadata[key] == nil ? nil : try float(key) }

    public func array(_ key: String) throws(GGUFError) -> [GGUFValue] {
        guard case .array(let a)? = metadata[key] else { throw missing(key, "an array") }
        return a
    }

    private func missing(_ key: String, _ what: String) -> GGUFError {
        GGUFError(field: "metadata \(shown(key))", offset: 0,
                  problem: metadata[key] == nil ? "missing" : "expected \(what), found \(metadata[key]!)")
    }
}

public struct GGUFTensorInfo: Equatable, Sendable {
    public let name: String
    public let extents: [Int]        // innermost first, as stored
    public let type: GGMLType
    public let offset: Int           // from the start of the data section
    public let byteCount: Int
    let infoOffset: Int              // where the info sits in the file, for errors

    public var elementCount: Int { extents.reduce(1, *) }
    /// PyTorch order: outermost first.
    public var shape: [Int] { extents.reversed() }
}

public enum GGMLType: UInt32, Sendable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q8_0 = 8, bf16 = 30

    public var blockSize: Int {
        switch self { case .f32, .f16, .bf16: return 1; case .q4_0, .q4_1, .q8_0: return 32 }
    }

    public var blockBytes: Int {
        switch self {
        case .f32: return 4
        case .f16, .bf16: return 2
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }

    public var description: String {
        switch self {
        case .f32: return "F32"; case .f16: return "F16"; case .bf16: return "BF16"
        case .q4_0: return "Q4_0"; case .q4_1: return "Q4_1"; case .q8_0: return "Q8_0"
        }
    }
}

public struct GGUFError: Error, Equatable, CustomStringConvertible {
    public let field: String
    public let offset: Int
    public let problem: String
    public var description: String { "GGUF \(field) at byte \(offset): \(problem)" }
}

/// A metadata value.
public indirect enum GGUFValue: Equatable, Sendable, CustomStringConvertible {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16), uint32(UInt32), int32(Int32)
    case float32(Float), bool(Bool), string(String), array([GGUFValue]), uint64(UInt64), int64(Int64), float64(Double)

    public var int: Int? {
        switch self {
        case .uint8(let v): return Int(v)
        case .int8(let v): return Int(v)
        case .uint16(let v): return Int(v)
        case .int16(let v): return Int(v)
        case .uint32(let v): return Int(v)
        case .int32(let v): return Int(v)
        case .uint64(let v): return Int(exactly: v)
        case .int64(let v): return Int(v)
        default: return nil
        }
    }

    public var double: Double? {
        switch self {
        case .float32(let v): return Double(v)
        case .float64(let v): return v
        default: return int.map(Double.init)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { return s } else { return nil } }

    public var description: String {
        switch self {
        case .string(let s): return shown(s, limit: 60)
        case .array(let a): return "array of \(a.count)"
        case .bool(let b): return "\(b)"
        default: return double.map { "\($0)" } ?? "?"
        }
    }
}

/// A cursor over the file that checks every read against the bytes left.
struct ByteReader {
    let data: Data
    private(set) var offset = 0

    init(data: Data) { self.data = data }

    var remaining: Int { data.count - offset }

    private func need(_ n: Int, _ field: String) throws(GGUFError) {
        guard n <= remaining else {
            throw GGUFError(field: field, offset: offset, problem: "needs \(n) bytes, only \(remaining) left; truncated file")
        }
    }

    mutating func load<T: FixedWidthInteger>(_: T.Type, field: String) throws(GGUFError) -> T {
        try need(MemoryLayout<T>.size, field)
        let v = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) }
        offset += MemoryLayout<T>.size
        return T(littleEndian: v)
    }

    mutating func u32(field: String) throws(GGUFError) -> UInt32 { try load(UInt32.self, field: field) }
    mutating func u64(field: String) throws(GGUFError) -> UInt64 { try load(UInt64.self, field: field) }

    mutating func bytes(_ n: Int, field: String) throws(GGUFError) -> [UInt8] {
        try need(n, field)
        defer { offset += n }
        return [UInt8](data[data.startIndex + offset ..< data.startIndex + offset + n])
    }

    /// A u64 count of items that each take at least `minimumBytesEach` bytes: checked against the
    /// bytes left so that a corrupted count cannot ask for a huge allocation.
    mutating func count(field: String, minimumBytesEach: Int) throws(GGUFError) -> Int {
        let at = offset
        let n = try u64(field: field)
        guard n <= UInt64(remaining / max(minimumBytesEach, 1)) else {
            throw GGUFError(field: field, offset: at, problem: "count \(n) cannot fit in the \(remaining) bytes left")
        }
        return Int(n)
    }

    mutating func string(field: String) throws(GGUFError) -> String {
        let n = try count(field: "\(field) length", minimumBytesEach: 1)
        let at = offset
        let b = try bytes(n, field: field)
        guard let s = String(validating: b, as: UTF8.self) else {
            throw GGUFError(field: field, offset: at, problem: "not valid UTF-8")
        }
        return s
    }

    mutating func value(type: UInt32, typeOffset: Int, field: String, depth: Int) throws(GGUFError) -> GGUFValue {
        switch type {
        case 0: return .uint8(try load(UInt8.self, field: field))
        case 1: return .int8(try load(Int8.self, field: field))
        case 2: return .uint16(try load(UInt16.self, field: field))
        case 3: return .int16(try load(Int16.self, field: field))
        case 4: return .uint32(try load(UInt32.self, field: field))
        case 5: return .int32(try load(Int32.self, field: field))
        case 6: return .float32(Float(bitPattern: try load(UInt32.self, field: field)))
        case 7:
            let at = offset
            let b = try load(UInt8.self, field: field)
            guard b <= 1 else { throw GGUFError(field: field, offset: at, problem: "bool must be 0 or 1, found \(b)") }
            return .bool(b == 1)
        case 8: return .string(try string(field: field))
        case 9:
            guard depth < 8 else { throw GGUFError(field: field, offset: typeOffset, problem: "arrays nested deeper than 8") }
            let elemAt = offset
            let elemType = try u32(field: "\(field) element type")
            let size = GGUFValue.minimumSize(type: elemType)
            guard size > 0 else {
                throw GGUFError(field: "\(field) element type", offset: elemAt, problem: "unknown value type \(elemType)")
            }
            let n = try count(field: "\(field) count", minimumBytesEach: size)
            var items: [GGUFValue] = []
            items.reserveCapacity(n)
            for i in 0..<n {
                items.append(try value(type: elemType, typeOffset: elemAt, field: "\(field)[\(i)]", depth: depth + 1))
            }
            return .array(items)
        case 10: return .uint64(try load(UInt64.self, field: field))
        case 11: return .int64(try load(Int64.self, field: field))
        case 12: return .float64(Double(bitPattern: try load(UInt64.self, field: field)))
        default:
            throw GGUFError(field: "\(field) type", offset: typeOffset, problem: "unknown value type \(type) (0 to 12)")
        }
    }
}

extension GGUFValue {
    /// The fewest bytes one value of a type occupies; 0 for an unknown type.
    static func minimumSize(type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: return 1
        case 2, 3: return 2
        case 4, 5, 6: return 4
        case 8, 10, 11, 12: return 8
        case 9: return 12
        default: return 0
        }
    }
}
