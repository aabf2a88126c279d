import Foundation
import SwiftProtobuf

public typealias Envelope = Charter_V1_Envelope
public typealias Message = Charter_V1_Envelope.OneOf_Body

/// The frame layout of protocol/PROTOCOL.md: one protobuf header frame, then raw bulk frames.
/// No sockets here: this turns messages into frames and back.
public enum Wire {
    public static let protocolVersion: UInt32 = 4

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case empty
        case malformed(String)
        case versionMismatch(UInt32)
        case unknownMessage

        public var description: String {
            switch self {
            case .empty: return "malformed message: no frames"
            case .malformed(let why): return "malformed header frame: \(why)"
            case .versionMismatch(let v): return "speaks protocol \(protocolVersion), got \(v)"
            case .unknownMessage: return "unknown message (an envelope without a known body)"
            }
        }

        /// The error reply a receiver sends back, when it knows the sender.
        public var reply: Charter_V1_Error {
            var e = Charter_V1_Error()
            switch self {
            case .empty, .malformed: e.code = .malformed
            case .versionMismatch: e.code = .versionMismatch
            case .unknownMessage: e.code = .unknownMessage
            }
            e.message = description
            return e
        }
    }

    /// The header frame of a message.
    public static func header(_ body: Message) -> Data {
        var envelope = Envelope()
        envelope.protocolVersion = protocolVersion
        envelope.body = body
        return try! envelope.serializedData() // a filled-in message always serializes
    }

    /// Parses frames (after any routing id) into the message and its bulk frames.
    public static func decode(_ frames: [Data]) throws(DecodeError) -> (message: Message, bulk: ArraySlice<Data>) {
        guard let first = frames.first else { throw .empty }
        let envelope: Envelope
        do { envelope = try Envelope(serializedBytes: first) } catch { throw .malformed("\(error)") }
        guard envelope.protocolVersion == protocolVersion else { throw .versionMismatch(envelope.protocolVersion) }
        guard let body = envelope.body else { throw .unknownMessage }
        return (body, frames.dropFirst())
    }
}
