# frozen_string_literal: true

# A minimal, real Doorkeeper token server for token-rotator's tests: Rails 6.1 + Doorkeeper 5.5 from
# the Debian packages (scripts/doorkeeper-deps installs them), SQLite file database, WEBrick.
#
#   ruby app.rb [PORT] [DATABASE_FILE]
#
# Environment:
#   DOORKEEPER_PORT              port on 127.0.0.1 (or argv[0]); default 3000; 0 lets the kernel pick
#                                one. Once it listens, the server prints
#                                "... listening on http://127.0.0.1:PORT" on stdout.
#   DOORKEEPER_DB                SQLite file (or argv[1]); default ./doorkeeper.sqlite3. Never :memory:,
#                                the server is threaded and every thread has its own connection.
#   DOORKEEPER_REVOKE_MODE       on_use (default): oauth_access_tokens has previous_refresh_token, so a
#                                used refresh token is revoked when the new access token is first used
#                                (e.g. at /oauth2/token/info). immediate: no such column, the refresh
#                                token is revoked at once.
#   DOORKEEPER_REUSE_ACCESS_TOKEN  1/true: Doorkeeper's reuse_access_token.
#   DOORKEEPER_LOG_LEVEL         Rails log level (default warn); logs go to stderr.
#   DOORKEEPER_PARENT_PID        exit when this process (the test) is gone.
#
# Routes: Doorkeeper's under /oauth2 (POST /oauth2/token, GET /oauth2/token/info, POST /oauth2/revoke,
# POST /oauth2/introspect), a protected API resource GET /api/contacts (see ContactsController), plus
# loopback-only set-up routes under /test (see TestController).

require "logger"
require "json"
require "rails"
require "active_support/core_ext/integer/time"
require "active_record/railtie"
require "action_controller/railtie"
require "doorkeeper"
require "webrick"
require "rack/handler/webrick"

PORT = Integer(ARGV[0] || ENV["DOORKEEPER_PORT"] || 3000)
DB_PATH = File.expand_path(ARGV[1] || ENV["DOORKEEPER_DB"] || "doorkeeper.sqlite3")
REVOKE_MODE = (ENV["DOORKEEPER_REVOKE_MODE"] || "on_use").strip
REUSE_ACCESS_TOKEN = %w[1 true yes on].include?(ENV["DOORKEEPER_REUSE_ACCESS_TOKEN"].to_s.downcase)
abort "DOORKEEPER_REVOKE_MODE must be on_use or immediate, not #{REVOKE_MODE.inspect}" unless %w[on_use immediate].include?(REVOKE_MODE)
abort "the database must be a file" if DB_PATH.include?(":memory:")

# Stora's scopes: public.<resource>:read|write.
STORA_RESOURCES = %w[
  contact contract contract_template coupon credit_note deal identity_verification image invoice note
  order product product_category protection_level site staff subscription task tenancy timeline
  unit unit_allocation unit_type webhook_endpoint
].freeze
STORA_SCOPES = STORA_RESOURCES.flat_map { |r| ["public.#{r}:read", "public.#{r}:write"] }.freeze
DEFAULT_SCOPE = "public.contact:read"

ENV["RAILS_ENV"] = "production"
ENV["DATABASE_URL"] = "sqlite3:#{DB_PATH}?pool=32&timeout=10000"

# TokenRequestLog counts the requests to POST /oauth2/token (grant type and status of each), for tests
# that assert how many token requests a run made.
module TokenRequestLog
  @mutex = Mutex.new
  @entries = []

  def self.add(entry)
    @mutex.synchronize { @entries << entry }
  end

  def self.entries
    @mutex.synchronize { @entries.dup }
  end

  def self.reset
    @mutex.synchronize { @entries.clear }
  end

  class Middleware
    def initialize(app)
      @app = app
    end

    def call(env)
      status, headers, body = @app.call(env)
      if env["REQUEST_METHOD"] == "POST" && env["PATH_INFO"] == "/oauth2/token"
        params = env["action_dispatch.request.request_parameters"] || {}
        TokenRequestLog.add("at" => Time.now.utc.to_f, "grant_type" => params["grant_type"].to_s, "status" => status.to_i)
      end
      [status, headers, body]
    end
  end
end

class DoorkeeperTestApp < Rails::Application
  config.root = __dir__
  config.load_defaults 6.1
  config.eager_load = false
  config.cache_classes = true
  config.api_only = true
  config.secret_key_base = "doorkeeper-test-server-not-a-secret-" + "0" * 32
  config.logger = Logger.new($stderr)
  config.log_level = (ENV["DOORKEEPER_LOG_LEVEL"] || "warn").to_sym
  config.consider_all_requests_local = false
  config.hosts.clear
  config.active_record.migration_error = false
  config.active_record.dump_schema_after_migration = false
  # One request at a time: SQLite has no row locks (Doorkeeper's lock! is a no-op there), so a
  # global lock stands in for the row lock Doorkeeper takes on a real database.
  config.middleware.insert_before 0, Rack::Lock
  config.middleware.insert_before 0, TokenRequestLog::Middleware
end

Doorkeeper.configure do
  orm :active_record
  api_only
  base_controller "ActionController::API"

  # The browser flow is never used: nobody is signed in, ever.
  resource_owner_authenticator do
    head :forbidden
    nil
  end
  admin_authenticator do
    head :forbidden
    nil
  end

  grant_flows %w[authorization_code client_credentials]
  use_refresh_token
  access_token_expires_in 2.hours
  authorization_code_expires_in 10.minutes
  reuse_access_token if REUSE_ACCESS_TOKEN

  default_scopes DEFAULT_SCOPE
  optional_scopes(*(STORA_SCOPES - [DEFAULT_SCOPE]))

  force_ssl_in_redirect_uri false
  # Plaintext tokens and secrets (no hash_token_secrets / hash_application_secrets).
end

DoorkeeperTestApp.initialize!

# Schema: Doorkeeper's stock tables, PKCE columns on grants; previous_refresh_token per revoke mode.
ActiveRecord::Migration.verbose = false
ActiveRecord::Schema.define do
  conn = ActiveRecord::Base.connection
  unless conn.table_exists?(:oauth_applications)
    create_table :oauth_applications do |t|
      t.string :name, null: false
      t.string :uid, null: false
      t.string :secret, null: false
      t.text :redirect_uri, null: false
      t.string :scopes, null: false, default: ""
      t.boolean :confidential, null: false, default: true
      t.timestamps null: false
    end
    add_index :oauth_applications, :uid, unique: true
  end

  unless conn.table_exists?(:oauth_access_grants)
    create_table :oauth_access_grants do |t|
      t.references :resource_owner, null: false
      t.references :application, null: false
      t.string :token, null: false
      t.integer :expires_in, null: false
      t.text :redirect_uri, null: false
      t.datetime :created_at, null: false
      t.datetime :revoked_at
      t.string :scopes, null: false, default: ""
      t.string :code_challenge, null: true
      t.string :code_challenge_method, null: true
    end
    add_index :oauth_access_grants, :token, unique: true
    add_foreign_key :oauth_access_grants, :oauth_applications, column: :application_id
  end

  unless conn.table_exists?(:oauth_access_tokens)
    create_table :oauth_access_tokens do |t|
      t.references :resource_owner, index: true
      t.references :application, null: false
      t.string :token, null: false
      t.string :refresh_token
      t.integer :expires_in
      t.datetime :revoked_at
      t.datetime :created_at, null: false
      t.string :scopes
    end
    add_index :oauth_access_tokens, :token, unique: true
    add_index :oauth_access_tokens, :refresh_token, unique: true
    add_foreign_key :oauth_access_tokens, :oauth_applications, column: :application_id
  end

  has_previous = conn.column_exists?(:oauth_access_tokens, :previous_refresh_token)
  if REVOKE_MODE == "on_use" && !has_previous
    add_column :oauth_access_tokens, :previous_refresh_token, :string, null: false, default: ""
  elsif REVOKE_MODE == "immediate" && has_previous
    remove_column :oauth_access_tokens, :previous_refresh_token
  end
end
[Doorkeeper::Application, Doorkeeper::AccessGrant, Doorkeeper::AccessToken].each(&:reset_column_information)

if Doorkeeper::AccessToken.refresh_token_revoked_on_use? != (REVOKE_MODE == "on_use")
  abort "schema does not match DOORKEEPER_REVOKE_MODE=#{REVOKE_MODE}"
end
abort "PKCE columns missing" unless Doorkeeper::AccessGrant.pkce_supported?

# ContactsController stands in for a resource of the Stora Public API: GET /api/contacts, guarded as
# the API guards it, by an access token with scope public.contact:read (doorkeeper_authorize!). A
# live token gets 200 {"contacts": [...]}; a missing, unknown, revoked or expired one Doorkeeper's 401
# (empty body, WWW-Authenticate: Bearer realm="Doorkeeper", error="invalid_token"); a token without
# the scope 403. Presenting a token goes through Doorkeeper::OAuth::Token.authenticate, as
# /oauth2/token/info does, so in the revoke-on-use mode the first use of a refreshed access token
# here revokes the refresh token (and the row, with the access token) it replaced.
class ContactsController < ActionController::API
  before_action -> { doorkeeper_authorize! "public.contact:read" }

  def index
    render json: { contacts: [{ id: "contact-1", resource_owner_id: doorkeeper_token.resource_owner_id }] }
  end
end

# Set-up routes for tests, loopback only. JSON in, JSON out.
#
#   GET  /test/health                      200 {"ok":true,...}
#   GET  /test/stats                       {"token_requests": N, "requests": [{grant_type,status,at}]}
#   POST /test/stats/reset
#   POST /test/clients   {redirect_uri, scopes, name, confidential}
#                        -> {client_id, client_secret, redirect_uri, scopes}
#   POST /test/codes     {client_id, redirect_uri, scope, resource_owner_id, expires_in,
#                         code_challenge, code_challenge_method}          -> {code}
#   POST /test/tokens    {client_id, scope, resource_owner_id, expires_in, refresh (default true)}
#                        -> {access_token, refresh_token, expires_in, created_at, scope}
#   POST /test/revoke    {refresh_token | access_token | client_id}       -> {revoked: N}
#                        client_id revokes every token and grant of the application (an operator
#                        disconnecting the integration)
#   POST /test/clients/delete {client_id}                                 -> {deleted: N}
#   POST /test/refresh_token {refresh_token}       -> {exists, revoked}   (without using it)
class TestController < ActionController::API
  before_action :loopback_only

  def health
    render json: { ok: true, revoke_mode: REVOKE_MODE, reuse_access_token: REUSE_ACCESS_TOKEN,
                   doorkeeper: Doorkeeper::VERSION::STRING, rails: Rails.version }
  end

  def stats
    entries = TokenRequestLog.entries
    render json: { token_requests: entries.size, requests: entries }
  end

  def reset_stats
    TokenRequestLog.reset
    render json: { token_requests: 0 }
  end

  def create_client
    app = Doorkeeper::Application.create!(
      name: params[:name].presence || "test-client",
      redirect_uri: params[:redirect_uri].presence || "http://127.0.0.1/callback",
      scopes: params[:scopes].to_s,
      confidential: params.key?(:confidential) ? ActiveModel::Type::Boolean.new.cast(params[:confidential]) : true,
    )
    render json: { client_id: app.uid, client_secret: app.plaintext_secret, redirect_uri: app.redirect_uri,
                   scopes: app.scopes.to_s }
  end

  def delete_client
    app = find_app
    return if performed?

    app.destroy!
    render json: { deleted: 1 }
  end

  def create_code
    app = find_app
    return if performed?

    attrs = {
      application_id: app.id,
      resource_owner_id: Integer(params[:resource_owner_id].presence || 1),
      redirect_uri: params[:redirect_uri].presence || app.redirect_uri.split.first,
      scopes: params[:scope].presence || app.scopes.to_s.presence || DEFAULT_SCOPE,
      expires_in: Integer(params[:expires_in].presence || Doorkeeper.config.authorization_code_expires_in),
    }
    if params[:code_challenge].present?
      attrs[:code_challenge] = params[:code_challenge]
      attrs[:code_challenge_method] = params[:code_challenge_method].presence || "S256"
    end
    grant = Doorkeeper::AccessGrant.create!(attrs)
    render json: { code: grant.plaintext_token }
  end

  def create_tokens
    app = find_app
    return if performed?

    refresh = params.key?(:refresh) ? ActiveModel::Type::Boolean.new.cast(params[:refresh]) : true
    token = Doorkeeper::AccessToken.create_for(
      application: app,
      resource_owner: Integer(params[:resource_owner_id].presence || 1),
      scopes: Doorkeeper::OAuth::Scopes.from_string(params[:scope].presence || app.scopes.to_s.presence || DEFAULT_SCOPE),
      expires_in: Integer(params[:expires_in].presence || Doorkeeper.config.access_token_expires_in),
      use_refresh_token: refresh,
    )
    render json: { access_token: token.plaintext_token, refresh_token: token.plaintext_refresh_token,
                   expires_in: token.expires_in, created_at: token.created_at.to_i, scope: token.scopes_string }
  end

  def refresh_token_status
    t = Doorkeeper::AccessToken.by_refresh_token(params[:refresh_token].to_s)
    render json: { exists: !t.nil?, revoked: t.nil? || t.revoked? }
  end

  def revoke
    n = 0
    if params[:refresh_token].present?
      t = Doorkeeper::AccessToken.by_refresh_token(params[:refresh_token])
      if t && !t.revoked?
        t.revoke
        n += 1
      end
    end
    if params[:access_token].present?
      t = Doorkeeper::AccessToken.by_token(params[:access_token])
      if t && !t.revoked?
        t.revoke
        n += 1
      end
    end
    if params[:client_id].present?
      app = find_app
      return if performed?

      now = Time.now.utc
      n += Doorkeeper::AccessToken.where(application_id: app.id, revoked_at: nil).update_all(revoked_at: now)
      n += Doorkeeper::AccessGrant.where(application_id: app.id, revoked_at: nil).update_all(revoked_at: now)
    end
    render json: { revoked: n }
  end

  private

  def loopback_only
    addr = request.get_header("REMOTE_ADDR").to_s
    return if ["127.0.0.1", "::1", "::ffff:127.0.0.1"].include?(addr)

    render json: { error: "forbidden", error_description: "set-up routes answer loopback only" }, status: :forbidden
  end

  def find_app
    app = Doorkeeper::Application.find_by(uid: params[:client_id].to_s)
    render json: { error: "not_found", error_description: "no such client_id" }, status: :not_found unless app
    app
  end
end

Rails.application.routes.draw do
  use_doorkeeper scope: "oauth2" do
    skip_controllers :applications, :authorized_applications, :authorizations
  end

  get "api/contacts", to: "contacts#index", format: false

  scope "test", controller: "test", format: false do
    get "health", action: :health
    get "stats", action: :stats
    post "stats/reset", action: :reset_stats
    post "clients", action: :create_client
    post "clients/delete", action: :delete_client
    post "codes", action: :create_code
    post "tokens", action: :create_tokens
    post "revoke", action: :revoke
    post "refresh_token", action: :refresh_token_status
  end
end

# WEBrick writes the headers and the body of a response separately; with Nagle's algorithm on, a
# keep-alive client then waits ~40 ms (delayed ACK) for every response. Turn Nagle off.
module NoDelay
  def run(sock)
    sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1) if sock.respond_to?(:setsockopt)
    super
  end
end
WEBrick::HTTPServer.prepend(NoDelay)

# The test that started the server may die without stopping it (a cancelled CI job, a go test
# timeout); the server then goes too, instead of living on as an orphan.
if (parent = ENV["DOORKEEPER_PARENT_PID"].to_s).match?(/\A\d+\z/)
  Thread.new do
    loop do
      sleep 1
      begin
        Process.kill(0, Integer(parent))
      rescue Errno::ESRCH
        exit!(0)
      end
      exit!(0) if Process.ppid != Integer(parent)
    end
  end
end

if $PROGRAM_NAME == __FILE__
  $stdout.sync = true
  $stderr.sync = true
  webrick = nil
  Rack::Handler::WEBrick.run(
    Rails.application,
    Host: "127.0.0.1",
    Port: PORT, # 0: the kernel picks a free port, reported below
    AccessLog: [],
    Logger: WEBrick::Log.new($stderr, WEBrick::Log::WARN),
    StartCallback: lambda {
      port = webrick.listeners.first.addr[1]
      puts "doorkeeper #{Doorkeeper::VERSION::STRING} (rails #{Rails.version}, revoke_mode=#{REVOKE_MODE}, " \
           "reuse_access_token=#{REUSE_ACCESS_TOKEN}) listening on http://127.0.0.1:#{port}"
    },
  ) do |server|
    webrick = server
    %w[INT TERM].each { |sig| trap(sig) { server.shutdown } }
  end
end
