import Engine
import XCTest

/// With HeapReuse on, a 64 MB block comes from the heap rather than a mapping of its own, and once
/// freed its pages stay in the process for the next pass instead of being unmapped.
final class HeapReuseTests: XCTestCase {
    func testLargeBlocksComeFromTheHeapAndTheirPagesStay() throws {
        HeapReuse.enable()
        guard HeapReuse.enabled else { throw XCTSkip("MALLOC_MMAP_MAX_ or MALLOC_TRIM_THRESHOLD_ is set: glibc's own choice stands") }
        let count = 16 << 20 // floats: 64 MB
        let before = HeapReuse.figures
        let block = UnsafeMutablePointer<Float>.allocate(capacity: count)
        block.initialize(repeating: 1, count: count)
        let during = HeapReuse.figures
        block.deallocate()
        let after = HeapReuse.figures
        XCTAssertEqual(during.mapped, before.mapped, "no mapping of its own")
        XCTAssertGreaterThanOrEqual(during.heap, before.heap + count * 4, "taken from the heap")
        XCTAssertEqual(after.heap, during.heap, "freed, its pages stay in the heap")
        XCTAssertGreaterThanOrEqual(after.free, count * 4, "and are free for the next block")
    }
}
