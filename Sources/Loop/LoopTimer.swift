/// A timer on a loop that calls `action` when due (set again to move it): the closure form
/// of `EventLoop.setTimer`, for a session or a daemon.
public final class LoopTimer: EventHandler {
    private unowned let loop: EventLoop
    /// What runs when the timer is due (replaceable, for an action that re-arms its own timer).
    public var action: () -> Void
    private var registration: EventLoop.Registration?

    /// A timer that is not set yet.
    public init(loop: EventLoop, action: @escaping () -> Void) {
        self.loop = loop
        self.action = action
    }

    private var armed = false

    /// Sets the timer, unless it is already set (an earlier deadline is kept).
    public func setUnlessArmed(after duration: Duration) {
        guard !armed else { return }
        let registration = self.registration ?? loop.register(self)
        self.registration = registration
        armed = true
        loop.setTimer(registration, after: duration)
    }

    /// Unsets the timer (it may be set again).
    public func cancel() {
        guard armed, let registration else { return }
        armed = false
        loop.cancelTimer(registration)
    }

    /// Unsets the timer and leaves the loop, which kept it alive while registered (a timer
    /// that fired once stays registered until then): an owner that is done with it calls
    /// this, or the loop holds it, and what its action captured, until the loop closes. Set
    /// again, it registers anew.
    public func invalidate() {
        armed = false
        guard let registration else { return }
        self.registration = nil
        loop.unregister(registration)
    }

    public func handle(events: IOEvents, tag: UInt8) {}

    public func handleTimer() {
        armed = false
        action()
    }

    public func handleLoopClose() {
        if let registration { loop.unregister(registration) }
        registration = nil
    }

    deinit {
        if let registration { loop.unregister(registration) }
    }
}
