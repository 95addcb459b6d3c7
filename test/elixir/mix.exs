# An Elixir application that uses nif_session_cache as a user's would: a mix dependency on this checkout, built by
# rebar3, with ssl configured in config/config.exs. `make test` runs its ExUnit test (scripts/elixir_test.sh).
defmodule NifSessionCacheElixirTest.MixProject do
  use Mix.Project

  def project do
    [
      app: :nif_session_cache_elixir_test,
      version: "0.1.0",
      elixir: "~> 1.14",
      deps: [{:nif_session_cache, path: "../..", manager: :rebar3}]
    ]
  end

  def application do
    [extra_applications: [:logger, :ssl]]
  end
end
