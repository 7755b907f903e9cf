// The records the controller's state is made of, shared by the store that keeps them and the controller
// code that validates and serves them. A leaf: it imports nothing, so the store never reaches up into
// the controller for its own record types.

export interface Route {
  /** An exact hostname (`app.example.test`) or a wildcard (`*.example.test`), lowercase. */
  host: string;
  /** A path prefix matched on segment boundaries. `/` (the default) matches every path. */
  path?: string;
  cluster: string;
  /** Where the agent sends the stream: `http://host:port`, normalized, always with a port. */
  target: string;
}
