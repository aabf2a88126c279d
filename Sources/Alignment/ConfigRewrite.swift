import Foundation
import Yams

extension RLConfig {
    /// A configuration's text with some keys set or removed (`"model.policy": "/runs/x/policy"`,
    /// nil removes): what workers of a run made in code load, the rest of the file as written.
    public static func rewrite(_ text: String, name: String, setting values: [String: String?]) throws -> String {
        let parsed: Node?
        do { parsed = try Yams.compose(yaml: text) } catch { throw DataError.yaml(name, error) }
        guard var root = parsed, root.mapping != nil else { throw DataError("\(name): the configuration is not a mapping of sections") }
        for (key, value) in values.sorted(by: { $0.key < $1.key }) {
            let parts = key.split(separator: ".", maxSplits: 1).map(String.init)
            precondition(parts.count == 2, "section.key expected")
            guard var mapping = (root[parts[0]] ?? Node([(Node, Node)]())).mapping else { throw DataError("\(name): section \(parts[0]) is not a mapping") }
            mapping[parts[1]] = value.map { Node($0) }
            root[parts[0]] = .mapping(mapping)
        }
        return try Yams.serialize(node: root)
    }
}
