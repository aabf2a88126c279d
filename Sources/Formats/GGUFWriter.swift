import Foundation

/// Writes GGUF version 3 files in the layout `GGUFFile` reads: float32 or float16 tensors from
/// values, or any type from raw bytes already in that type's block layout.
public struct GGUFWriter {
    public var metadata: [(String, GGUFValue)] = []
    public var tensors: [(name: String, shape: [Int], type: GGMLType, bytes: [UInt8])] = []
    public var alignment = 32

    public init() {}

    public mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// `shape` in PyTorch order (outermost first); `values` row-major.
    public mutating func addTensor(_ name: String, shape: [Int], values: [Float], type: GGMLType = .f32) {
        precondition(type == .f32 || type == .f16, "the writer stores F32 or F16")
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        var bytes = Data()
        if type == .f32 {
            for v in values { bytes.appendLE(v.bitPattern) }
        } else {
            for v in values { bytes.appendLE(Float16(v).bitPattern) }
        }
        tensors.append((name, shape, type, [UInt8](bytes)))
    }

    public mutating func addRawTensor(_ name: String, shape: [Int], type: GGMLType, bytes: [UInt8]) {
        tensors.append((name, shape, type, bytes))
    }

    public func encoded() -> Data {
        var out = Data()
        out.append(contentsOf: Array("GGUF".utf8))
        out.appendLE(UInt32(3))
        out.appendLE(UInt64(tensors.count))
        out.appendLE(UInt64(metadata.count))
        for (key, value) in metadata {
            out.appendString(key)
            out.appendLE(value.typeCode)
            out.appendValue(value)
        }
        var offset = 0
        var offsets: [Int] = []
        for t in tensors {
            offsets.append(offset)
            offset += (t.bytes.count + alignment - 1) / alignment * alignment
        }
        for (t, off) in zip(tensors, offsets) {
            out.appendString(t.name)
            out.appendLE(UInt32(t.shape.count))
            for e in t.shape.reversed() { out.appendLE(UInt64(e)) }
            out.appendLE(t.type.rawValue)
            out.appendLE(UInt64(off))
        }
        out.padTo(alignment)
        for t in tensors {
            out.append(contentsOf: t.bytes)
            out.padTo(alignment)
        }
        return out
    }

    public func write(to url: URL) throws { try encoded().write(to: url, options: .atomic) }
}

extension GGUFValue {
    var typeCode: UInt32 {
        switch self {
        case .uint8: return 0; case .int8: return 1; case .uint16: return 2; case .int16: return 3
        case .uint32: return 4; case .int32: return 5; case .float32: return 6; case .bool: return 7
        case .string: return 8; case .array: return 9; case .uint64: return 10; case .int64: return 11
        case .float64: return 12
        }
    }
}

extension Data {
    mutating func appendLE<T: FixedWidthInteger>(_ v: T) {
        Swift.withUnsafeBytes(of: v.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendString(_ s: String) {
        appendLE(UInt64(s.utf8.count))
        append(contentsOf: Array(s.utf8))
    }

    mutating func padTo(_ alignment: Int) {
        let pad = (alignment - count % alignment) % alignment
        append(contentsOf: [UInt8](repeating: 0, count: pad))
    }

    mutating func appendValue(_ v: GGUFValue) {
        switch v {
        case .uint8(let x): appendLE(x)
        case .int8(let x): appendLE(x)
        case .uint16(let x): appendLE(x)
        case .int16(let x): appendLE(x)
        case .uint32(let x): appendLE(x)
        case .int32(let x): appendLE(x)
        case .float32(let x): appendLE(x.bitPattern)
        case .bool(let x): appendLE(UInt8(x ? 1 : 0))
        case .string(let s): appendString(s)
        case .array(let items):
            appendLE(items.first?.typeCode ?? 4)
            appendLE(UInt64(items.count))
            for item in items { appendValue(item) }
        case .uint64(let x): appendLE(x)
        case .int64(let x): appendLE(x)
        case .float64(let x): appendLE(x.bitPattern)
        }
    }
}
