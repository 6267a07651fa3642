import Socks

FrozenTools.main { FrozenTools.make(.configuration, arguments: $0) }
