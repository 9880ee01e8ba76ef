# token-rotator: a static binary on an empty image, running as a non-root user.
# Build: docker build --build-arg VERSION=$(git describe --tags --always) -t token-rotator .
# The build stage's RUN lines are checked outside Docker by scripts/check-dockerfile (make test).

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/token-rotator .
RUN mkdir -p /out/certs && cp /etc/ssl/certs/ca-certificates.crt /out/certs/

FROM scratch
COPY --from=build /out/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/token-rotator /token-rotator
USER 65532:65532
ENTRYPOINT ["/token-rotator"]
CMD ["--config", "/etc/token-rotator/config.yaml", "--once"]
