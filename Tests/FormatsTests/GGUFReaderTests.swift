import Foundation
import Formats
import XCTest

final class GGUFReaderTests: XCTestCase {
    /// Little-endian byte building for hand-made files.
    struct Bytes {
        var data = Data()
        mutating func u8(_ v: UInt8) { data.append(v) }
        mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { data.append(contentsOf: $0) } }
        mutating func str(_ s: String) { u64(UInt64(s.utf8.count)); data.append(contentsOf: Array(s.utf8)) }
        mutating func header(tensors: UInt64, kvs: UInt64) { data.append(contentsOf: Array("GGUF".utf8)); u32(3); u64(tensors); u64(kvs) }
    }

    func expectError(_ data: Data, field: String, _ problem: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try GGUFFile(data: data), file: file, line: line) { error in
            guard let e = error as? GGUFError else { return XCTFail("not a GGUFError: \(error)", file: file, line: line) }
            XCTAssertTrue(e.field.contains(field), "field: \(e)", file: file, line: line)
            XCTAssertTrue(e.problem.contains(problem), "problem: \(e)", file: file, line: line)
        }
    }

    func validFile() -> Data {
        var g = GGUFWriter()
        g.add("general.architecture", .string("llama"))
        g.add("nested", .array([.array([.int32(1), .int32(-2)]), .array([.int32(3)])]))
        g.addTensor("w", shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        return g.encoded()
    }

    func testEveryValueTypeRoundTrips() throws {
        let values: [(String, GGUFValue)] = [
            ("u8", .uint8(200)), ("i8", .int8(-100)), ("u16", .uint16(60000)), ("i16", .int16(-30000)),
            ("u32", .uint32(4_000_000_000)), ("i32", .int32(-2_000_000_000)), ("f32", .float32(1.5)),
            ("bool", .bool(true)), ("str", .string("héllo ✓")), ("u64", .uint64(1 << 60)), ("i64", .int64(-(1 << 60))),
            ("f64", .float64(-2.25)), ("strings", .array([.string("a"), .string("")])),
            ("nested", .array([.array([.uint8(1), .uint8(2)]), .array([.uint8(3)])])), ("empty", .array([])),
        ]
        var g = GGUFWriter()
        for (k, v) in values { g.add(k, v) }
        g.addTensor("t", shape: [4], values: [0.5, -1, 2, 65504], type: .f16)
        let file = try GGUFFile(data: g.encoded())
        XCTAssertEqual(file.metadataOrder, values.map(\.0))
        for (k, v) in values { XCTAssertEqual(file.metadata[k], v, k) }
        XCTAssertEqual(file.floats(file.tensor("t")!), [0.5, -1, 2, 65504])
    }

    /// Blocks built by hand; expected weights computed from the block definitions.
    func testQuantizedBlocksDequantizeToHandComputedValues() throws {
        var q41 = Bytes(); q41.u16(0x3800); q41.u16(0xBC00)        // d = 0.5, m = -1
        for j in 0..<16 { q41.u8(UInt8(j) | UInt8(15 - j) << 4) }
        var q40 = Bytes(); q40.u16(0x4000)                         // d = 2
        for j in 0..<16 { q40.u8(UInt8(j) | UInt8(j) << 4) }
        var q80 = Bytes(); q80.u16(0x3400)                         // d = 0.25
        for j in 0..<32 { q80.u8(UInt8(bitPattern: Int8(j - 16))) }
        var bf = Bytes(); bf.u16(0x3FC0); bf.u16(0xC000)            // 1.5, -2
        var g = GGUFWriter()
        g.addRawTensor("q41", shape: [32], type: .q4_1, bytes: [UInt8](q41.data))
        g.addRawTensor("q40", shape: [32], type: .q4_0, bytes: [UInt8](q40.data))
        g.addRawTensor("q80", shape: [32], type: .q8_0, bytes: [UInt8](q80.data))
        g.addRawTensor("bf", shape: [2], type: .bf16, bytes: [UInt8](bf.data))
        let f = try GGUFFile(data: g.encoded())
        XCTAssertEqual(f.floats(f.tensor("q41")!), (0..<16).map { 0.5 * Float($0) - 1 } + (0..<16).map { 0.5 * Float(15 - $0) - 1 })
        XCTAssertEqual(f.floats(f.tensor("q40")!), (0..<16).map { 2 * Float($0 - 8) } + (0..<16).map { 2 * Float($0 - 8) })
        XCTAssertEqual(f.floats(f.tensor("q80")!), (0..<32).map { 0.25 * Float($0 - 16) })
        XCTAssertEqual(f.floats(f.tensor("bf")!), [1.5, -2])
    }

    func testBadMagicIsNamed() {
        var d = validFile()
        d[0] = UInt8(ascii: "X")
        expectError(d, field: "magic", "not a GGUF file")
    }

    func testEveryTruncationGivesAnErrorNotACrash() {
        let d = validFile()
        // The last 8 bytes are alignment padding after the tensor's 24 bytes: cut into the data instead.
        for cut in [0, 3, 7, 15, 23, 30, 40, 60, 90, d.count - 40, d.count - 9] {
            XCTAssertThrowsError(try GGUFFile(data: d.prefix(cut)), "cut at \(cut)") { e in
                XCTAssertTrue("\(e)".contains("truncated") || "\(e)".contains("cannot fit"), "cut at \(cut): \(e)")
            }
        }
    }

    func testAbsurdCountsAreRefusedBeforeAllocating() {
        var b = Bytes(); b.header(tensors: 1 << 60, kvs: 0)
        expectError(b.data, field: "tensor count", "cannot fit")
        b = Bytes(); b.header(tensors: 0, kvs: UInt64.max)
        expectError(b.data, field: "metadata count", "cannot fit")
        b = Bytes(); b.header(tensors: 0, kvs: 1); b.u64(1 << 62); b.data.append(Data(count: 64))
        expectError(b.data, field: "metadata[0] key length", "cannot fit")
        b = Bytes(); b.header(tensors: 0, kvs: 1); b.str("a"); b.u32(9); b.u32(4); b.u64(1 << 40)
        expectError(b.data, field: "metadata \"a\" count", "cannot fit")
    }

    func testUnknownTypesAreNamed() {
        var b = Bytes(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(13); b.u64(0)
        expectError(b.data, field: "metadata \"k\" type", "unknown value type 13")
        b = Bytes(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(9); b.u32(77); b.u64(1); b.u64(0)
        expectError(b.data, field: "metadata \"k\" element type", "unknown value type 77")
        b = Bytes(); b.header(tensors: 1, kvs: 0); b.str("t"); b.u32(1); b.u64(32); b.u32(99); b.u64(0)
        b.data.append(Data(count: 64))
        expectError(b.data, field: "tensor \"t\" type", "unknown tensor type 99")
    }

    func testBadTensorInfosAreNamed() {
        var b = Bytes(); b.header(tensors: 1, kvs: 0); b.str("t"); b.u32(7)
        b.data.append(Data(count: 64))
        expectError(b.data, field: "tensor \"t\" dimension count", "expected 1 to 4, found 7")
        b = Bytes(); b.header(tensors: 1, kvs: 0); b.str("t"); b.u32(2); b.u64(1 << 30); b.u64(1 << 30); b.u32(0); b.u64(0)
        expectError(b.data, field: "tensor \"t\" extent 1", "absurd extent")
        b = Bytes(); b.header(tensors: 1, kvs: 0); b.str("t"); b.u32(1); b.u64(1000); b.u32(0); b.u64(0)
        b.data.append(Data(count: 100))
        expectError(b.data, field: "tensor \"t\" data", "truncated")
        b = Bytes(); b.header(tensors: 1, kvs: 0); b.str("t"); b.u32(1); b.u64(33); b.u32(2); b.u64(0)
        b.data.append(Data(count: 100))
        expectError(b.data, field: "tensor \"t\" extents", "not a whole number of Q4_0 blocks")
    }

    func testBadStringsAndBoolsAreNamed() {
        var b = Bytes(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(8); b.u64(2); b.u8(0xC3); b.u8(0x28)
        expectError(b.data, field: "metadata \"k\"", "not valid UTF-8")
        b = Bytes(); b.header(tensors: 0, kvs: 1); b.str("k"); b.u32(7); b.u8(2)
        expectError(b.data, field: "metadata \"k\"", "bool must be 0 or 1")
        b = Bytes(); b.header(tensors: 0, kvs: 2); b.str("k"); b.u32(7); b.u8(1); b.str("k"); b.u32(7); b.u8(0)
        expectError(b.data, field: "metadata \"k\"", "key appears twice")
    }

    func testMissingFileIsNamed() {
        XCTAssertThrowsError(try GGUFFile(url: URL(fileURLWithPath: "/nonexistent/model.gguf"))) {
            XCTAssertTrue("\($0)".contains("cannot read /nonexistent/model.gguf"), "\($0)")
        }
    }
}
