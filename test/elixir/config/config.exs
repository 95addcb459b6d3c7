import Config

# All three keys: OTP 25 and 27 read session_cb, OTP 29's connections and listeners read the other two.
config :ssl,
  session_cb: :nif_session_cache,
  client_session_cb: :nif_session_cache,
  server_session_cb: :nif_session_cache
