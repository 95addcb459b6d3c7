defmodule NifSessionCacheElixirTest.ResumptionTest do
  # Real TLS 1.2 connections on loopback, with ssl configured by config/config.exs as an Elixir user would.
  use ExUnit.Case, async: false

  @digest {:digest, :sha256}

  setup_all do
    san = {:Extension, {2, 5, 29, 17}, false, [dNSName: ~c"localhost"]}

    %{server_config: server, client_config: client} =
      :public_key.pkix_test_data(%{
        server_chain: %{root: [@digest], intermediates: [], peer: [@digest, {:extensions, [san]}]},
        client_chain: %{root: [@digest], intermediates: [], peer: [@digest]}
      })

    common = [versions: [:"tlsv1.2"], active: false]
    client = common ++ client ++ [verify: :verify_peer, server_name_indication: ~c"localhost"]
    %{server: common ++ server, client: client}
  end

  test "the application's config puts ssl on our cache, and a second connection resumes the first", ctx do
    assert Application.get_env(:ssl, :session_cb) == :nif_session_cache
    assert %{problems: []} = :nif_session_cache.check_config()

    {:ok, listener} = :ssl.listen(0, [ip: {127, 0, 0, 1}, reuseaddr: true] ++ ctx.server)
    {:ok, {_, port}} = :ssl.sockname(listener)
    acceptor = spawn_link(fn -> accept(listener) end)

    first = session_id(port, ctx.client)
    wait_until(fn -> entries(:client) == 1 and entries(:server) == 1 end)
    second = session_id(port, ctx.client)

    assert second == first
    assert entries(:client) == 1
    assert entries(:server) == 1
    :ok = :ssl.close(listener)
    Process.unlink(acceptor)
  end

  defp session_id(port, opts) do
    {:ok, socket} = :ssl.connect(~c"localhost", port, opts, 5000)
    {:ok, [session_id: id]} = :ssl.connection_information(socket, [:session_id])
    :ok = :ssl.close(socket)
    id
  end

  defp accept(listener) do
    case :ssl.transport_accept(listener) do
      {:ok, transport} ->
        _ = :ssl.handshake(transport, 5000)
        accept(listener)

      {:error, _} ->
        :ok
    end
  end

  defp entries(role) do
    :nif_session_cache.stores()
    |> Enum.filter(&(&1.role == role and not &1.terminated))
    |> Enum.map(& &1.entries)
    |> Enum.sum()
  end

  defp wait_until(check, ms \\ 5000) do
    cond do
      check.() -> :ok
      ms <= 0 -> flunk("timed out")
      true -> Process.sleep(10); wait_until(check, ms - 10)
    end
  end
end
