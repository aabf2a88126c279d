import Foundation

/// The most memory one model or run may ask for: the machine's physical memory. Sizes read from
/// files and configurations are checked against it first, so a corrupted `embedding_length` or a
/// `lora.rank` of 100000 is one clear line, not an abort inside malloc.
public enum MemoryBudget {
    public static var physicalBytes: Int { Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE))) }

    /// Refuses `bytes` (a Double so that products of hostile numbers cannot overflow) when it is
    /// more than the machine has.
    public static func check(_ bytes: Double, for what: String) throws(EngineError) {
        let have = physicalBytes
        guard bytes <= Double(have) else {
            throw .tooLarge("\(what) needs \(format(bytes)), more than this machine's \(format(Double(have))) of memory")
        }
    }

    public static func format(_ bytes: Double) -> String {
        bytes >= 0x1p40 ? String(format: "%.3g TiB", bytes / 0x1p40)
            : bytes >= 0x1p30 ? String(format: "%.1f GiB", bytes / 0x1p30) : String(format: "%.1f MiB", bytes / 0x1p20)
    }
}
