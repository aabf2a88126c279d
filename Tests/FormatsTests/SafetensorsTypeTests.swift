import Formats
import Foundation
import XCTest

/// Half-precision storage: the bits written, checked against values worked out by hand.
final class SafetensorsTypeTests: XCTestCase {
    func testBFloat16AndFloat16RoundToNearestEven() throws {
        // 1 + 2^-8 lies exactly between two bfloat16 values (0x3F80, 0x3F81): ties go to the even one;
        // 1 + 3 * 2^-9 lies above the middle and rounds up; pi (0x40490FDB) rounds down to 3.140625.
        let values: [Float] = [1, 1.00390625, 1.005859375, -2.5, .pi, .nan]
        func stored(_ type: SafetensorsFile.StorageType) throws -> (bits: [UInt16], read: [Float]) {
            let data = values.withUnsafeBufferPointer { SafetensorsFile.encode([("x", [values.count], $0)], as: type) }
            let url = FileManager.default.temporaryDirectory.appendingPathComponent("charter-st-\(UUID()).safetensors")
            defer { try? FileManager.default.removeItem(at: url) }
            try data.write(to: url)
            let file = try SafetensorsFile(url: url)
            XCTAssertEqual(file.tensors["x"]?.dtype, type.rawValue)
            let bits = data.suffix(2 * values.count).withUnsafeBytes { raw in (0..<values.count).map { raw.loadUnaligned(fromByteOffset: 2 * $0, as: UInt16.self) } }
            return (bits, try XCTUnwrap(file.floats("x")))
        }
        let bf = try stored(.bf16)
        XCTAssertEqual(bf.bits, [0x3F80, 0x3F80, 0x3F81, 0xC020, 0x4049, 0x7FC0])
        XCTAssertEqual(Array(bf.read.prefix(5)), [1, 1, 1.0078125, -2.5, 3.140625])
        XCTAssertTrue(bf.read[5].isNaN)
        let half = try stored(.f16)
        // float16 keeps 10 fraction bits: 1 + 2^-8 is exact there; pi is 0x4248 (3.140625).
        XCTAssertEqual(Array(half.bits.prefix(5)), [0x3C00, 0x3C04, 0x3C06, 0xC100, 0x4248])
        XCTAssertEqual(Array(half.read.prefix(5)), [1, 1.00390625, 1.005859375, -2.5, 3.140625])
    }
}
