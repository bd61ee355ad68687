# Build: a static binary, no cgo.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go schema.sql openapi.json ./
COPY docs/ ./docs/
COPY migrations/ ./migrations/
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/todo .

# Run: distroless static, as a non-root user. The binary embeds schema.sql and the
# migrations, openapi.json and the /docs page.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/todo /todo
USER nonroot:nonroot
EXPOSE 8080
# GET /metrics (METRICS_ADDR); publish it to the monitoring network only.
EXPOSE 9464
ENTRYPOINT ["/todo"]
