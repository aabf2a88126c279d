import Engine

/// Tensor types to float32. Quantized blocks are not aligned in the file: every read is
/// `loadUnaligned`.
///
/// Block layouts (32 weights each):
///  - Q8_0, 34 bytes: f16 scale d, 32 x int8 q; weight = d * q
///  - Q4_0, 18 bytes: f16 d, 16 bytes of nibbles; weight j = d * (low nibble of byte j - 8),
///    weight j + 16 = d * (high nibble - 8)
///  - Q4_1, 20 bytes: f16 d, f16 min m, 16 bytes of nibbles; weight j = d * low + m,
///    weight j + 16 = d * high + m
enum Dequantize {
    static func run(_ type: GGMLType, src: UnsafeRawPointer, count: Int, into out: UnsafeMutablePointer<Float>) {
        switch type {
        case .f32:
            for i in 0..<count { out[i] = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: 4 * i, as: UInt32.self))) }
        case .f16:
            for i in 0..<count { out[i] = half(src, 2 * i) }
        case .bf16:
            for i in 0..<count {
                out[i] = BFloat16(bits: UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))).float
            }
        case .q8_0:
            for b in 0..<count / 32 {
                let block = src + b * 34, o = out + b * 32
                let d = half(block, 0)
                for j in 0..<32 { o[j] = d * Float(Int8(bitPattern: block.load(fromByteOffset: 2 + j, as: UInt8.self))) }
            }
        case .q4_0:
            for b in 0..<count / 32 {
                let block = src + b * 18, o = out + b * 32
                let d = half(block, 0)
                for j in 0..<16 {
                    let q = block.load(fromByteOffset: 2 + j, as: UInt8.self)
                    o[j] = d * Float(Int(q & 0x0F) - 8)
                    o[j + 16] = d * Float(Int(q >> 4) - 8)
                }
            }
        case .q4_1:
            for b in 0..<count / 32 {
                let block = src + b * 20, o = out + b * 32
                let d = half(block, 0), m = half(block, 2)
                for j in 0..<16 {
                    let q = block.load(fromByteOffset: 4 + j, as: UInt8.self)
                    o[j] = d * Float(q & 0x0F) + m
                    o[j + 16] = d * Float(q >> 4) + m
                }
            }
        }
    }

    @inline(__always) static func half(_ p: UnsafeRawPointer, _ offset: Int) -> Float {
        Float(Float16(bitPattern: UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self))))
    }
}
