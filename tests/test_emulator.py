"""The emulator's DynamoDB transactions (tools/emulator.py): all or nothing, undone item by item
(a write failing midway included), the table's stream left as DynamoDB leaves it, and nothing
kept behind.

In-process under moto's ``mock_aws``, with the emulator's patches installed for each test and
taken out again afterwards (``monkeypatch`` restores what they replace).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.dynamo_type import Item
from moto.dynamodb.models.table import StreamRecord, Table

from tools import emulator

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef
    from mypy_boto3_dynamodbstreams import DynamoDBStreamsClient

TABLE = "emulated"
REGION = "us-east-1"


def tracked(model: type) -> list[Any]:
    """The models of this class moto registers for its dashboard."""
    found: list[Any] = vars(model)["instances_tracked"]
    return found


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    # Whatever install_journaled_transactions replaces comes back after the test.
    monkeypatch.setattr(
        DynamoDBBackend, "transact_write_items", DynamoDBBackend.transact_write_items
    )
    for model in (Item, StreamRecord):
        monkeypatch.setattr(model, "instances_tracked", tracked(model))
    emulator.install_journaled_transactions()


@pytest.fixture
def clients(installed: None) -> Iterator[tuple[DynamoDBClient, DynamoDBStreamsClient, str]]:
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )
        arn = dynamodb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
        streams = boto3.client(
            "dynamodbstreams",
            region_name=REGION,
            config=Config(account_id_endpoint_mode="disabled"),
        )
        [shard] = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        iterator = streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        yield dynamodb, streams, iterator


def put(key: str, *, new: bool = False) -> TransactWriteItemTypeDef:
    if new:
        return {
            "Put": {
                "TableName": TABLE,
                "Item": {"pk": {"S": key}},
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        }
    return {"Put": {"TableName": TABLE, "Item": {"pk": {"S": key}}}}


def test_a_cancelled_transaction_leaves_the_stream_as_dynamodb_does(
    clients: tuple[DynamoDBClient, DynamoDBStreamsClient, str],
) -> None:
    dynamodb, streams, iterator = clients
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "taken"}})
    first = streams.get_records(ShardIterator=iterator)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in first["Records"]] == ["taken"]

    # The first write succeeds, the second's condition fails: the transaction is cancelled.
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(TransactItems=[put("undone"), put("taken", new=True)])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert "Item" not in dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "undone"}})

    # The reader that was already reading sees what was committed after, and nothing undone.
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "after"}})
    dynamodb.transact_write_items(TransactItems=[put("committed", new=True)])
    later = streams.get_records(ShardIterator=first["NextShardIterator"])
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in later["Records"]] == ["after", "committed"]


def test_transactions_keep_no_copy_of_the_table_behind(
    clients: tuple[DynamoDBClient, DynamoDBStreamsClient, str],
) -> None:
    dynamodb, _, _ = clients
    for index in range(20):
        dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": f"row-{index}"}})
    tables, items, records = (len(tracked(model)) for model in (Table, Item, StreamRecord))
    for index in range(5):
        dynamodb.transact_write_items(TransactItems=[put(f"new-{index}", new=True)])
    assert len(tracked(Table)) == tables
    assert len(tracked(Item)) == items
    assert len(tracked(StreamRecord)) == records
    assert dynamodb.scan(TableName=TABLE)["Count"] == 25


def test_a_write_failing_midway_is_undone_item_by_item(
    clients: tuple[DynamoDBClient, DynamoDBStreamsClient, str],
) -> None:
    dynamodb, streams, iterator = clients
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "counter"}, "n": {"N": "1"}})
    table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables[TABLE]
    seen = streams.get_records(ShardIterator=iterator)

    # Every condition holds; the third write fails as it is applied (an undefined value), after
    # the first two changed the table: an item updated in place and a new one.
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "counter"}},
                        "UpdateExpression": "SET n = n + :one",
                        "ConditionExpression": "n = :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                put("created", new=True),
                {
                    "Update": {
                        "TableName": TABLE,
                        "Key": {"pk": {"S": "broken"}},
                        "UpdateExpression": "SET n = :undefined",
                    }
                },
            ]
        )
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    counter = dynamodb.get_item(TableName=TABLE, Key={"pk": {"S": "counter"}})["Item"]
    assert counter["n"] == {"N": "1"}
    assert dynamodb.scan(TableName=TABLE)["Count"] == 1
    assert dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].tables[TABLE] is table
    later = streams.get_records(ShardIterator=seen["NextShardIterator"])
    assert later["Records"] == []


def test_a_refused_condition_returns_the_item_when_asked(
    clients: tuple[DynamoDBClient, DynamoDBStreamsClient, str],
) -> None:
    dynamodb, _, _ = clients
    dynamodb.put_item(TableName=TABLE, Item={"pk": {"S": "taken"}, "owner": {"S": "alice"}})
    refused_put = put("taken", new=True)
    refused_put["Put"]["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    with pytest.raises(ClientError) as cancelled:
        dynamodb.transact_write_items(TransactItems=[put("free", new=True), refused_put])
    reasons = cancelled.value.response["CancellationReasons"]
    assert [reason["Code"] for reason in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"] == {"pk": {"S": "taken"}, "owner": {"S": "alice"}}
    assert dynamodb.scan(TableName=TABLE)["Count"] == 1


def test_one_item_twice_is_refused_before_anything_is_written(
    clients: tuple[DynamoDBClient, DynamoDBStreamsClient, str],
) -> None:
    dynamodb, _, _ = clients
    with pytest.raises(ClientError) as refused:
        dynamodb.transact_write_items(TransactItems=[put("twice"), put("twice", new=True)])
    assert refused.value.response["Error"]["Code"] == "ValidationException"
    assert dynamodb.scan(TableName=TABLE)["Count"] == 0
