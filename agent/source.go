package agent

import "context"

type sourceKey struct{}

// WithSource tells the agent who asks for an operator action ("rest
// 127.0.0.1:40112 user admin", "cli"): the agent that performs the action
// logs it, so an operator reading one node's log sees who did what there.
func WithSource(ctx context.Context, source string) context.Context {
	return context.WithValue(ctx, sourceKey{}, source)
}

// SourceOf is the source WithSource attached ("unknown" when none).
func SourceOf(ctx context.Context) string {
	if s, ok := ctx.Value(sourceKey{}).(string); ok && s != "" {
		return s
	}
	return "unknown"
}
