import AccessRules

/// A matched rule built from text, for report tests.
struct MatchedRuleInput {
    let key: String
    let data: [UInt8]
    var matched: MatchedRule { MatchedRule(key: Array(key.utf8), instructions: data) }
}
